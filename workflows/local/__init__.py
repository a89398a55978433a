"""The local executor: runs the rendered Argo WorkflowTemplate on one machine, with no cluster."""
