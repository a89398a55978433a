"""`stellar predict {spectral,lightcurve,sed} --input DIR_OR_FILE --output FILE.csv [--model VERSION_OR_ALIAS]
[--home DIR] [--registry URI]`: batch prediction with a registered model.

The input may be, for the model's modality:
- a folder of archive files that the connectors replay (`steps.ingest.sources.FOLDER_READERS`), or one such file;
- a raw artifact (the ingest stage's output directory) or its data parquet file;
- a feature artifact (the preprocess stage's output directory) or a feature parquet file (already preprocessed).
Raw inputs are preprocessed by the same `steps.preprocess` functions as in training, with the parameters of the
model's input spec (grid length and range, band set and dereddening, view lengths); the result must match the
spec, or the command stops saying how.

The model is `--model` (default `production`): an alias or version of the registry (default HOME/registry), or a
model directory. With no such version the command exits 2 and names the versions there are.

The CSV has one row per object, in input order: `id` (the source's own identifier), then `teff`, `logg`, `feh`,
`teff_err`, `logg_err`, `feh_err` (1 sigma; Teff in K, log g in dex of cm/s^2, [Fe/H] in dex) or `class`,
`p_<class>` per class and `period` (days, as the preprocessing's period search found it); `domain_distance` and
`in_domain` (False: the object is unlike the training objects and the prediction is an extrapolation, see
`steps.models.domain`); and `problem`: empty, or why the object has no prediction (the reason it was quarantined when
read or in preprocessing, or which inputs it lacks) or why a label was left blank (the model's answer lay beyond
the labels it learnt from: `steps.models.label_range`). An input with no object, or none that the model could read,
exits 2 and leaves `--output` as it was (an earlier run's good CSV is not replaced by a table of failures): the
reasons go to stderr instead. The output path is checked before any work, and the CSV replaces an existing file
only once it is complete.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from steps.core.names import DEFAULT_HOME, FEATURES_FILE, MODALITY, SPEC_FILE

OBJECTS = {"spectral": "spectra", "lightcurve": "light curves", "sed": "photometry rows"}


class PredictError(RuntimeError):
    """Bad input or model choice: exit status 2, with this message."""


def add_predict_command(sub: argparse._SubParsersAction) -> None:
    """Add `predict` to the `stellar` parser."""
    command = sub.add_parser("predict", help="predict a folder or table of objects with a registered model",
                             description=__doc__.split("\n\n")[0])
    command.add_argument("model_name", choices=tuple(MODALITY), metavar="{spectral,lightcurve,sed}")
    command.add_argument("--input", type=Path, required=True,
                         help="a folder of archive files, a raw or feature artifact, or a raw or feature parquet file")
    command.add_argument("--output", type=Path, required=True, help="CSV file to write")
    command.add_argument("--model", default="production",
                         help="registry alias or version, or a model directory (default production)")
    command.add_argument("--home", help=f"working home of the registry (default: $STELLAR_HOME or {DEFAULT_HOME})")
    command.add_argument("--registry", help="registry URI (default HOME/registry)")
    command.set_defaults(handler=predict_command)


def predict_command(args: argparse.Namespace) -> int:
    """Run `stellar predict`; return the exit status."""
    from workflows.cli import home_dir

    started = time.perf_counter()
    try:
        check_output(args.output, args.input)
        home = home_dir(args.home)
        given = (f"--registry {args.registry}" if args.registry else f"--home {home}" if args.home
                 else f"STELLAR_HOME {home}" if os.environ.get("STELLAR_HOME") else f"the default home {home}")
        model_dir, label, verdict = resolve_model(args.model_name, args.model,
                                                  args.registry or str(home / "registry"), home / "serving", given)
        frame = predict(args.model_name, model_dir, args.input)
        unanswered = ~frame.attrs["answered"]
        missing = int(unanswered.sum())
        if missing == len(frame):
            raise PredictError(f"--input {args.input}: none of its {objects(len(frame))} could be predicted\n"
                               + _reasons(frame))
        write_csv(frame, args.output)
    except PredictError as error:
        # an earlier run's CSV at --output is left whole, and said to be, so that nobody reads it as this run's
        headline, _, details = str(error).partition("\n")
        kept = f" ({args.output}, from before, was left as it was)" if args.output.is_file() else ""
        print(f"stellar predict: {headline}{kept}" + (f"\n{details}" if details else ""), file=sys.stderr)
        return 2
    from steps.models.domain import outside as flagged

    outside = int(flagged(frame["in_domain"]).sum())
    blanked = int(((frame["problem"] != "") & ~unanswered).sum())
    notes = ([f"{missing} without a prediction: see the `problem` column"] if missing else []) + (
        [f"{blanked} with a label left blank: see the `problem` column"] if blanked else []) + (
        [f"{outside} unlike the training objects: see `in_domain`"] if outside else [])
    print(f"{args.model_name} {label}: {objects(len(frame))} -> {args.output}"
          + (f" ({'; '.join(notes)})" if notes else "") + f" in {time.perf_counter() - started:.1f} s")
    for object_id, reason in frame.attrs.get("set_aside", {}).items():
        print(f"note: {object_id}: a record of it was set aside ({reason}); its row is from the record kept",
              file=sys.stderr)
    for found in verdict.get("uninformative", []):
        print(f"note: on its test objects this model's {found['target']} was no better than their training mean "
              f"(robust sigma {found['robust_sigma']:.4g} against {found['null_robust_sigma']:.4g}): that column "
              "says nothing about these objects", file=sys.stderr)
    return 0


def objects(count: int) -> str:
    """'1 object', '2 objects'."""
    return f"{count} object{'' if count == 1 else 's'}"


def check_output(output: Path, source: Path | None = None) -> None:
    """Refuse an output path that cannot be written before any work is done: a folder, the input file `source`
    itself, or one that cannot be created or written in."""
    if output.is_dir():
        raise PredictError(f"--output {output}: is a folder; give the CSV file to write")
    if source is not None and source.is_file() and output.exists() and output.samefile(source):
        raise PredictError(f"--output {output}: is the --input file; the predictions would replace it: "
                           "give another file")
    blocking = next((parent for parent in reversed(output.parents) if parent.is_file()), None)
    if blocking is not None:
        raise PredictError(f"--output {output}: {blocking} is a file, not a folder")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PredictError(f"--output {output}: cannot create its folder: {error.strerror or error}") from None
    try:  # as `write_csv` will: a file beside the destination (permission bits alone miss /proc, read-only mounts)
        handle, probe = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".probe")
    except OSError as error:
        # a folder that takes no new files (/proc) answers ENOENT, which would say that the folder is missing
        reason = ("it takes no new files" if error.errno == errno.ENOENT and output.parent.is_dir()
                  else error.strerror or error)
        raise PredictError(f"--output {output}: cannot write in its folder {output.parent}: {reason}") from None
    os.close(handle)
    Path(probe).unlink()


def write_csv(frame, output: Path) -> None:
    """Write the CSV beside its destination and move it there, so a failed write leaves any old file whole."""
    from steps.core.permissions import as_if_created

    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
        with os.fdopen(handle, "w") as stream:
            frame.to_csv(stream, index=False, float_format="%.6g")
        as_if_created(temporary)
        os.replace(temporary, output)
    except OSError as error:
        if temporary:
            Path(temporary).unlink(missing_ok=True)
        raise PredictError(f"--output {output}: cannot write it: {error.strerror or error}") from None


def _reasons(frame, shown: int = 5, reasons: int = 10) -> str:
    """One line per reason an object has no prediction, commonest first, with how many and which objects; the
    `reasons` commonest, then how many more (reasons that name an object's own numbers are each one object's)."""
    ids_by_reason: dict[str, list[str]] = {}
    for object_id, problem in zip(frame["id"], frame["problem"]):
        ids_by_reason.setdefault(problem, []).append(str(object_id))
    ranked = sorted(ids_by_reason.items(), key=lambda item: -len(item[1]))
    lines = []
    for problem, ids in ranked[:reasons]:
        listed = ", ".join(ids[:shown]) + (f" and {len(ids) - shown} more" if len(ids) > shown else "")
        lines.append(f"  {len(ids)} x {problem} ({listed})")
    if len(ranked) > reasons:
        rest = sum(len(ids) for _, ids in ranked[reasons:])
        lines.append(f"  and {len(ranked) - reasons} more reasons, for {rest} objects")
    return "\n".join(lines)


def resolve_model(name: str, ref: str, registry_uri: str, cache: Path, given: str) -> tuple[Path, str, dict]:
    """The model directory for `ref` (a directory, or an alias/version of `name` in the registry), a label, and the
    verdict of its evaluation (the registry's record of it, or `evaluation/verdict.json` beside a model directory
    that `stellar train-*` wrote; {} without one). `given`: what gave the registry (a flag, STELLAR_HOME), for its
    errors."""
    from steps.models.io import MODEL_JSON, model_dir_in

    if Path(ref).is_dir():
        model_dir = model_dir_in(Path(ref))
        if not (model_dir / MODEL_JSON).is_file():
            inner = [str(path.parent) for path in sorted(Path(ref).glob(f"*/{MODEL_JSON}"))]
            raise PredictError(f"--model {ref}: not a model directory (no {MODEL_JSON} in it)"
                               + (f"; the model is in {inner[0]}" if len(inner) == 1 else ""))
        return model_dir, f"model {model_dir}", _verdict_beside(model_dir, name)
    if os.sep in ref:
        raise PredictError(f"--model {ref}: no such model directory")
    if "://" not in registry_uri and not Path(registry_uri).is_dir():
        raise PredictError(f"{given}: no registry at {registry_uri} (no such folder): give the --home or --registry "
                           "of a `stellar run`, or --model DIR")
    from steps.core.registry import PRODUCTION, CorruptRecord, ModelRegistry, RegistryError

    registry = ModelRegistry.open(registry_uri)
    try:
        registry.resolve(name, ref)
    except RegistryError as error:  # it names the versions (or the models) there are, or the unreadable record
        hint = ("" if isinstance(error, CorruptRecord) or ref != PRODUCTION
                else "; train and promote one with `stellar run`, or pass --model VERSION")
        raise PredictError(f"--model {ref}: {error}{hint}") from None
    try:
        record, path = registry.download(name, ref, cache)
    except RegistryError as error:  # the stored files are not those registered
        raise PredictError(f"--model {ref}: {error}") from None
    return path, f"version {record.version}" + (f" ({ref})" if ref != record.version else ""), record.verdict or {}


def _verdict_beside(model_dir: Path, name: str) -> dict:
    """The verdict `stellar train-*` wrote for `model_dir` (DIR/<model>/evaluation beside DIR/<model>/model)."""
    path = model_dir.parent / "evaluation" / "verdict.json"
    try:
        return json.loads(path.read_text()).get(name) or {}
    except (OSError, ValueError, AttributeError):
        return {}


def predict(name: str, model_dir: Path, source: Path):
    """One row per input object: `id`, the model's outputs (ordered as documented above), `problem`."""
    import numpy as np
    import pandas as pd

    from steps.models import load_model

    model = load_model(model_dir)
    if model.name != name:
        raise PredictError(f"{model_dir} holds a {model.name!r} model, not {name!r}")
    try:
        features, quarantined, order = read_features(MODALITY[name], source, model.spec)
    except (FileNotFoundError, ValueError) as error:  # a table or raw artifact that cannot be read
        named = str(error).startswith(str(source))
        raise PredictError(f"--input {error}" if named else f"--input {source}: {error}") from None
    try:
        predicted = model.predict_table(features) if features.num_rows else pd.DataFrame()
    except (KeyError, ValueError, TypeError) as error:
        raise PredictError(f"{source}: the model cannot read these inputs: {error}") from None
    ids = features.column("id").to_pylist() if "id" in features.column_names else [str(i) for i in
                                                                                    range(features.num_rows)]
    outputs = _output_columns(model)
    rows: dict[str, dict[str, Any]] = {}
    usable = model.featurizer.usable(_columns(features)) if features.num_rows else []
    blanked = (model.blank_reasons({c: predicted[c].to_numpy() for c in predicted}, usable) if features.num_rows
               else [])
    answered: set[str] = set()
    for i, object_id in enumerate(ids):
        row = {c: predicted[c].iloc[i] if c in predicted else math.nan for c in outputs}
        row["problem"] = (blanked[i] or "") if usable[i] else model.featurizer.describe_unusable()
        rows[str(object_id)] = row
        if usable[i]:
            answered.add(str(object_id))
    set_aside = {}  # records set aside whose object was kept (a repeat): it has its row, the record a note
    for object_id, reason in quarantined.items():
        if object_id in rows:
            set_aside[object_id] = reason
        else:
            rows[object_id] = {**{c: math.nan for c in outputs}, "problem": f"quarantined: {reason}"}
    ordered = [i for i in order if i in rows] + [i for i in rows if i not in set(order)]
    if not ordered:
        raise PredictError(f"--input {source}: nothing to predict: no {OBJECTS[name]} in it (no file in a format "
                           f"the {MODALITY[name]} readers know, or an empty table)")
    frame = pd.DataFrame([{"id": i, **rows[i]} for i in ordered], columns=["id", *outputs, "problem"])
    frame.attrs["answered"] = np.array([i in answered for i in ordered], bool)  # read by the model, blank or not
    frame.attrs["set_aside"] = set_aside
    if "class" in frame:
        frame["class"] = frame["class"].where(frame["class"].notna(), "")
    return frame


def _columns(table):
    from steps.models.inputs import Columns

    return Columns(table)


def _output_columns(model) -> list[str]:
    from steps.models.domain import COLUMNS as DOMAIN_COLUMNS

    if model.task == "regression":
        return list(model.targets) + [f"{t}_err" for t in model.targets] + list(DOMAIN_COLUMNS)
    return ["class", *(f"p_{c}" for c in model.classes), "period", *DOMAIN_COLUMNS]


def read_features(modality: str, source: Path, spec: dict[str, Any]):
    """(feature table, {quarantined id: reason}, every object id in input order) for the input `source`; the
    reasons include those of records set aside when the input was read (an unreadable file, a duplicate object)."""
    from steps.core.artifacts import read_manifest, read_parquet
    from steps.preprocess.common import read_raw

    if not source.exists():
        raise PredictError(f"--input {source}: no such file or folder")
    read_reasons: dict[str, str] = {}
    if source.is_file() and not _is_parquet(source):
        raw, read_reasons = _read_archive_file(modality, source)
    elif source.is_file():
        table = read_parquet(source, "a table")
        if _is_features(modality, table.column_names):
            return table, {}, _ids(table)
        raw = _raw_table(modality, source, table)
    elif (source / "manifest.json").is_file():
        stage = read_manifest(source).stage
        if stage == f"preprocess.{modality}":
            _check_features_spec(modality, source / SPEC_FILE, spec)
            table = read_parquet(source / FEATURES_FILE, "the features")
            return table, _quarantine_reasons(source), _ids(table)
        if stage != f"ingest.{modality}":
            raise PredictError(f"--input {source}: an output of stage {stage!r}, not of ingest.{modality} or "
                               f"preprocess.{modality}")
        raw, read_reasons = read_raw(source, modality), _quarantine_reasons(source)
    else:
        raw, read_reasons = _read_folder(modality, source)
    features = preprocess(modality, raw, spec)
    quarantine = features.quarantine.table()
    reasons = dict(read_reasons)
    reasons.update(zip(quarantine.column("id").to_pylist(), quarantine.column("reason").to_pylist()))
    return features.table, reasons, [str(i) for i in raw.data.column("id").to_pylist()]


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(4) == b"PAR1"


def _quarantine_reasons(artifact: Path) -> dict[str, str]:
    """{id: reason} of the records an artifact's stage set aside (its quarantine table, when it has one)."""
    from steps.core.artifacts import read_parquet
    from steps.core.quarantine import QUARANTINE_TABLE

    if not (artifact / QUARANTINE_TABLE).is_file():
        return {}
    table = read_parquet(artifact / QUARANTINE_TABLE, "the objects set aside", ["id", "reason"])
    return _objects_set_aside(table.to_pylist())


def _objects_set_aside(rows: list[dict]) -> dict[str, str]:
    """{id: reason} of the quarantined rows that are objects. A labels table's rows set aside (no spectrum or light
    curve for them, repeated) are not: predict reads no labels, and a folder holding part of a library would get a
    row for every star it lacks."""
    from steps.core.quarantine import is_label_row

    return {row["id"]: row["reason"] for row in rows if not is_label_row(row)}


def _check_features_spec(modality: str, spec_file: Path, spec: dict[str, Any]) -> None:
    """A preprocessed spectra folder must be on the model's grid: vectors of the same length on another grid (the
    grid moved from 3900 to 3600 A) would be read as if on the model's."""
    from steps.preprocess.as_trained import SpecMismatch, check_spectral_grid

    if modality != "spectra":
        return
    try:
        made = json.loads(spec_file.read_text())
    except (OSError, ValueError) as error:
        raise PredictError(f"--input {spec_file.parent}: cannot read its {spec_file.name}: {error}") from None
    try:
        check_spectral_grid(made, spec, f"--input {spec_file.parent} has")
    except SpecMismatch as error:
        raise PredictError(str(error)) from None


def _raw_table(modality: str, source: Path, table):
    """A raw data table (the ingest schema of the modality) read from a file, as a raw artifact without labels."""
    import pyarrow as pa

    from steps.ingest.schemas import DATA_SCHEMAS
    from steps.preprocess.common import RawArtifact

    schema = DATA_SCHEMAS[modality]
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise PredictError(f"--input {source}: neither a {modality} feature table nor a raw {modality} table "
                           f"(lacks {', '.join(missing[:6])})")
    try:
        data = table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise PredictError(f"--input {source}: columns do not match the raw {modality} schema: {error}") from None
    return RawArtifact(path=source, data=data, labels=None, synthetic=False)


def _ids(table) -> list[str]:
    return [str(i) for i in table.column("id").to_pylist()] if "id" in table.column_names else []


def _is_features(modality: str, names: list[str]) -> bool:
    marker = {"spectra": ("flux", "snr"), "lightcurves": ("global_view",), "photometry": ("c_BP_RP", "abs_G")}
    return any(m in names for m in marker[modality]) and not _is_raw(modality, names)


def _is_raw(modality: str, names: list[str]) -> bool:
    from steps.ingest.schemas import DATA_SCHEMAS

    return all(name in names for name in DATA_SCHEMAS[modality].names)


def _read_folder(modality: str, folder: Path, shown_as: Path | None = None):
    """(raw artifact, {id: reason} of the records set aside) of a folder of archive files (`shown_as`: what logs
    call it)."""
    from steps.ingest import sources
    from steps.ingest.schemas import DATA_SCHEMAS
    from steps.preprocess.common import RawArtifact

    if modality not in sources.FOLDER_READERS:
        raise PredictError(f"--input {folder}: this version cannot read {modality} folders yet (readers exist for "
                           f"{', '.join(sorted(sources.FOLDER_READERS)) or 'none'}); give a raw or feature table")
    request = sources.IngestRequest(modality, 0, 0, str(folder), shown_as=str(shown_as or folder))
    ingested = sources.FOLDER_READERS[modality](request)
    data = ingested.data.select(DATA_SCHEMAS[modality].names)
    reasons = _objects_set_aside(ingested.quarantine.rows)
    return RawArtifact(path=folder, data=data, labels=None, synthetic=False), reasons


def _read_archive_file(modality: str, path: Path):
    """One archive file read as a folder holding only it (its objects keep the ids the folder reader gives)."""
    with tempfile.TemporaryDirectory(prefix="stellar-predict-") as folder:
        (Path(folder) / path.name).symlink_to(path.resolve())
        raw, reasons = _read_folder(modality, Path(folder), shown_as=path)
    raw.path = path
    return raw, reasons


def preprocess(modality: str, raw, spec: dict[str, Any]):
    """Preprocess raw tables exactly as for training: the model's spec gives the parameters, and must match."""
    from steps.preprocess.as_trained import SpecMismatch, preprocess_as_trained

    try:
        return preprocess_as_trained(modality, raw, spec)
    except SpecMismatch as error:
        raise PredictError(str(error)) from None
