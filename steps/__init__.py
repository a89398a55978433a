"""Stage code of stellar-pipeline: each subpackage is one stage, runnable as `python -m steps.<stage>`.

`steps` never imports `workflows`: a stage is an ordinary program with directories in and out.
"""
