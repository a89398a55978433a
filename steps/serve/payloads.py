"""Request bodies -> validated columns of one model's inputs, and the JSON Schema of those bodies.

`InputSpec.of(predictor)` reads which fields a loaded model takes (vectors with their lengths, scalars) from its
fitted input blocks and gives each a physical range. A body is decoded into a `Batch` (one NumPy array per field,
first axis the objects) from either encoding:

- JSON, `{"instances": [{field: value, ...}, ...]}` (parsed by orjson; a UTF-8 body with the `NaN`, `Infinity` and
  `-Infinity` that Python's `json.dumps` writes, which strict JSON has not, is read by Python's parser instead: NaN
  in a number field is null, and an infinity is refused with its field named, as in an `.npz` body);
- NumPy's `.npz` (`application/x-npz`): one array per field, named as in JSON, first axis the objects. It carries
  float32 arrays without any text parsing; `numpy.savez(buffer, flux=..., ivar=...)` writes one.

Every problem is an `InvalidInput` whose message names the field (and the object) and what is wrong; a body over
the size limits is `PayloadTooLarge`. Nothing here raises anything else for bad input.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from array import array as array_of_doubles
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

NPZ_MEDIA_TYPE = "application/x-npz"
ID_FIELD = "id"
MAX_ID_CHARACTERS = 256


class InvalidInput(ValueError):
    """Bad input: the message names the field and the problem (HTTP 422)."""


class PayloadTooLarge(ValueError):
    """More objects or bytes than the API is configured to take (HTTP 413)."""


@dataclass(frozen=True)
class FieldSpec:
    """One input field: a vector of `length` numbers or a scalar (`length` None), its allowed range."""

    name: str
    length: int | None
    required: bool
    low: float
    high: float
    integer: bool = False

    @property
    def bounded(self) -> bool:
        """Both ends of the range are physical limits (not the stand-in for "any finite number")."""
        return self.low > -ANY_FINITE and self.high < ANY_FINITE

    @property
    def nullable(self) -> bool:
        """Optional fields may be null: a missing measurement (imputed) or an absent mask/ivar; so may the entries
        of an optional vector (a continuum block the spectrum does not cover)."""
        return not self.required

    def json_schema(self) -> dict[str, Any]:
        """The field's JSON Schema (OpenAPI 3.1)."""
        number = {"type": "integer" if self.integer else "number", "minimum": self.low, "maximum": self.high}
        if self.length is not None:
            items = number if self.required else {"anyOf": [number, {"type": "null"}]}
            vector = {"type": "array", "items": items, "minItems": self.length, "maxItems": self.length}
            return vector if self.required else {"anyOf": [vector, {"type": "null"}]}
        if self.nullable:
            return {"anyOf": [number, {"type": "null"}]}
        return number


# Physical ranges by field name (prefix or exact); anything else must only be finite.
_RANGES: list[tuple[str, float, float, bool]] = [
    ("mag_", -10.0, 40.0, False), ("err_", 0.0, 10.0, False), ("c_", -20.0, 20.0, False),
    ("abs_", -20.0, 30.0, False), ("parallax_error", 0.0, 1e4, False), ("parallax", -1e4, 1e4, False),
    ("ebv", 0.0, 20.0, False),
    ("dereddened", 0.0, 1.0, True), ("ivar", 0.0, 1e30, False), ("mask", 0.0, 2.0**31 - 1, True),
    ("flux", -1e4, 1e4, False), ("continuum_shape", -10.0, 10.0, False), ("snr", 0.0, 1e6, False),
    ("period", 1e-4, 1e5, False), ("ls_period", 1e-4, 1e5, False), ("bls_period", 1e-4, 1e5, False),
    ("n_cadences", 0.0, 1e9, True), ("n_bands", 0.0, 100.0, True), ("amplitude", 0.0, 1e6, False),
    ("std", 0.0, 1e6, False), ("ls_power", 0.0, 1e6, False), ("bls_power", 0.0, 1e12, False),
    ("fourier_", 0.0, 10.0, False),
]
ANY_FINITE = 1e30  # the bound of a field that need only be a finite number
_SCALAR_TYPES = {int, float, type(None)}


def field_range(name: str) -> tuple[float, float, bool]:
    """(low, high, integer) of a field by its name; any finite number for a name not in `_RANGES`."""
    for key, low, high, integer in _RANGES:
        if name == key or (key.endswith("_") and name.startswith(key)):
            return low, high, integer
    return -ANY_FINITE, ANY_FINITE, False


@dataclass
class Batch:
    """Decoded objects: `arrays` (field -> array, first axis the objects), `n` objects, their `ids` (or None).

    Where the model's inputs are made from the request (`reports_problems`: SED catalogue photometry, uploaded FITS
    files), `left_out` holds the requested objects the model cannot use (request index -> why), which are not in
    `arrays`, and `requested_ids` the ids of every requested object; `requested` is how many the request held."""

    arrays: dict[str, np.ndarray]
    n: int
    ids: list[Any] | None
    reports_problems: bool = False
    left_out: dict[int, str] = field(default_factory=dict)
    requested_ids: list[Any] | None = None

    @property
    def requested(self) -> int:
        return self.n + len(self.left_out)

    def with_something_usable(self) -> "Batch":
        """This batch, unless the model can use none of its objects: then an `InvalidInput` naming each object's
        problem, as `stellar predict` exits non-zero when it can answer none (a mixed batch is answered, the objects
        the model cannot use with their `problem`)."""
        if self.n or not self.left_out:
            return self
        ids = self.requested_ids or [None] * self.requested
        raise InvalidInput("no object the model can use: " + "; ".join(
            f"instances[{index}]" + (f" (id {ids[index]!r})" if ids[index] is not None else "")
            + f": {self.left_out[index]}" for index in sorted(self.left_out)))


class InputSpec:
    """The fields one model takes, with lengths and ranges; decodes and validates request bodies."""

    def __init__(self, model: str, fields: list[FieldSpec], require_any: bool, max_objects: int):
        self.model = model
        self.fields = {f.name: f for f in fields}
        self.require_any = require_any  # an object must carry at least one value (SED: some band)
        self.max_objects = max_objects
        self._vectors = [f for f in fields if f.length is not None]
        self._scalars = [f for f in fields if f.length is None]
        self._low = np.array([f.low for f in self._scalars])
        self._high = np.array([f.high for f in self._scalars])
        self._integer = np.array([f.integer for f in self._scalars], bool)
        self._nullable = np.array([f.nullable for f in self._scalars], bool)

    @classmethod
    def of(cls, predictor: Any, max_objects: int) -> "InputSpec":
        """The input spec of a loaded predictor, from its fitted input blocks (baseline or Keras)."""
        featurizer = predictor.featurizer
        lengths: dict[str, int] = {}
        for block in getattr(featurizer, "inputs", None) or getattr(featurizer, "blocks", []):
            if hasattr(block, "length"):
                for column in (block.column, block.mask_column, block.ivar_column):
                    if column:
                        lengths[column] = int(block.length)
        names = predictor.input_fields
        fields = []
        for name in [*names["required"], *names["optional"]]:
            low, high, integer = field_range(name)
            fields.append(FieldSpec(name, lengths.get(name), name in names["required"], low, high, integer))
        require_any = not names["required"]
        return cls(predictor.name, fields, require_any, max_objects)

    def describe(self) -> dict[str, Any]:
        """What `GET /v1/models` shows of the inputs."""
        return {"required": [f.name for f in self.fields.values() if f.required],
                "optional": [f.name for f in self.fields.values() if not f.required],
                "vectors": {f.name: f.length for f in self.fields.values() if f.length is not None},
                "ranges": {f.name: [f.low, f.high] for f in self.fields.values()
                           if f.low > -ANY_FINITE or f.high < ANY_FINITE},
                "at_least_one_value": self.require_any}

    def instance_schema(self) -> dict[str, Any]:
        """JSON Schema of one object in `instances`."""
        properties = {ID_FIELD: {"anyOf": [{"type": "string", "maxLength": MAX_ID_CHARACTERS},
                                           {"type": "integer", "minimum": -2**63, "maximum": 2**63 - 1},
                                           {"type": "null"}],
                                 "description": "your identifier, returned with the prediction"}}
        properties.update({name: f.json_schema() for name, f in self.fields.items()})
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False,
                                  "required": [f.name for f in self.fields.values() if f.required]}
        if self.require_any:  # at least one field with a number (a missing band is null or absent)
            schema["anyOf"] = [{"required": [f.name], "properties": {f.name: {"type": "number"}}}
                               for f in self._scalars]
        return schema

    def request_schema(self) -> dict[str, Any]:
        """JSON Schema of a JSON request body."""
        return {"type": "object", "required": ["instances"], "additionalProperties": False,
                "properties": {"instances": {"type": "array", "items": self.instance_schema(), "minItems": 1,
                                             "maxItems": self.max_objects}}}

    # Decoding

    def decode_json(self, body: bytes) -> Batch:
        """Validate a JSON body into a `Batch`."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            document = _json_with_non_finite_numbers(body, error)
        if not isinstance(document, dict) or "instances" not in document:
            raise InvalidInput('body: expected an object {"instances": [...]}')
        extra = sorted(set(document) - {"instances"})
        if extra:
            raise InvalidInput(f"body: unknown field {extra[0]!r} (only 'instances' is read)")
        instances = document["instances"]
        if not isinstance(instances, list):
            raise InvalidInput(f"instances: expected a list of objects, got {_json_type(instances)}")
        self._check_count(len(instances))
        for index, record in enumerate(instances):
            if not isinstance(record, dict):
                raise InvalidInput(f"instances[{index}]: expected an object, got {_json_type(record)}")
            unknown = [key for key in record if key not in self.fields and key != ID_FIELD]
            if unknown:
                raise InvalidInput(f"instances[{index}].{unknown[0]}: unknown field for the {self.model} model "
                                   f"(it reads {self._field_list()})")
        arrays = {}
        for spec in self._vectors:
            present = [record.get(spec.name) for record in instances]
            if spec.required or any(value is not None for value in present):
                arrays[spec.name] = self._json_column(spec, present)
        if self._scalars:
            arrays.update(self._json_scalars(instances))
        return self._finish(arrays, len(instances), self._json_ids(instances))

    def decode_npz(self, body: bytes) -> Batch:
        """Validate an `.npz` body (one array per field) into a `Batch`."""
        if not body.startswith(b"PK"):
            raise InvalidInput("body: not an .npz archive (a zip of .npy arrays, as numpy.savez writes)")
        try:
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                members = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            raise InvalidInput(f"body: not a readable .npz archive ({error})") from None
        if len(members) > len(self.fields) + 1:
            raise InvalidInput(f"body: {len(members)} arrays, more than the {len(self.fields)} fields (and id) "
                               f"of the {self.model} model")
        largest = self.max_objects * max([f.length or 1 for f in self.fields.values()] + [256]) * 8 + 4096
        for member in members:
            if member.file_size > largest:
                raise PayloadTooLarge(f"{member.filename.removesuffix('.npy')}: {member.file_size} bytes "
                                      f"uncompressed, more than {self.max_objects} objects can need")
        try:
            with np.load(io.BytesIO(body), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except Exception as error:  # any failure to unpack untrusted bytes is a malformed archive
            raise InvalidInput(f"body: not a readable .npz archive ({type(error).__name__}: {error})"[:300]) from None
        if not all(isinstance(value, np.ndarray) for value in arrays.values()):
            raise InvalidInput("body: every member of the archive must be a NumPy array (.npy)")
        ids = arrays.pop(ID_FIELD, None)
        unknown = sorted(set(arrays) - set(self.fields))
        if unknown:
            raise InvalidInput(f"{unknown[0]}: unknown field for the {self.model} model (it reads "
                               f"{self._field_list()})")
        if not arrays:
            raise InvalidInput("body: the archive holds no input arrays")
        for name, value in arrays.items():
            length = self.fields[name].length
            if length is not None and value.shape == (length,):
                raise InvalidInput(f"{name}: expected a 2-D array of shape (objects, {length}), got ({length},): "
                                   f"one object is shape (1, {length}) ({name}[None] in NumPy)")
        counts = {name: (value.shape[0] if value.ndim else -1) for name, value in arrays.items()}
        n = next(iter(counts.values()))
        if n < 0 or any(count != n for count in counts.values()):
            raise InvalidInput(f"body: every array needs the objects along its first axis, got shapes "
                               f"{ {name: value.shape for name, value in arrays.items()} }")
        self._check_count(n)
        decoded = {}
        for name, value in arrays.items():
            spec = self.fields[name]
            if value.dtype.kind not in "iuf":  # as in JSON, where a boolean is not a number
                raise InvalidInput(f"{name}: expected numbers, got an array of {value.dtype}")
            shape = (n,) if spec.length is None else (n, spec.length)
            if value.shape != shape:
                if spec.length is None:
                    raise InvalidInput(f"{name}: expected one value per object, shape {shape}; got {value.shape}")
                raise InvalidInput(f"{name}: expected a 2-D array of shape (objects, {spec.length}), here {shape}; "
                                   f"got {value.shape}")
            decoded[name] = value.astype(np.float64, copy=False)
        for name, value in decoded.items():
            self._check_values(self.fields[name], value, missing_allowed=not self.fields[name].required)
        if ids is not None and (ids.shape != (n,) or ids.dtype.kind not in "iuU"):
            raise InvalidInput(f"id: expected {n} strings or integers, got {ids.dtype} of shape {ids.shape}")
        if ids is not None and ids.dtype.kind == "U" and ids.dtype.itemsize // 4 > MAX_ID_CHARACTERS:
            longest = int(np.argmax(np.char.str_len(ids)))
            if len(ids[longest]) > MAX_ID_CHARACTERS:
                raise InvalidInput(f"id[{longest}]: {len(ids[longest])} characters, more than the "
                                   f"{MAX_ID_CHARACTERS} an id may have (as in JSON)")
        return self._finish(decoded, n, ids.tolist() if ids is not None else None)

    def decode_arrays(self, arrays: dict[str, np.ndarray], ids: list[Any] | None, ranged: bool = True) -> Batch:
        """Validate arrays made on the server (from uploaded files) into a `Batch`; optional fields may hold NaN
        (a continuum block the spectrum does not cover). Without `ranged`, values outside a field's range pass: the
        arrays are preprocessing's own, as batch prediction gives the model (an SDSS L dwarf's normalised flux of
        -53,221 at a pixel, which the model clips, is not the client's error)."""
        n = len(next(iter(arrays.values()))) if arrays else 0
        self._check_count(n)
        for name, value in arrays.items():
            self._check_values(self.fields[name], value, missing_allowed=not self.fields[name].required,
                               ranged=ranged)
        return self._finish(dict(arrays), n, ids)

    # Checks

    def _check_count(self, n: int) -> None:
        if n == 0:
            raise InvalidInput("instances: empty batch (give at least one object)")
        if n > self.max_objects:
            raise PayloadTooLarge(f"instances: {n} objects, more than the {self.max_objects} one request may carry")

    def _field_list(self) -> str:
        names = list(self.fields)
        return ", ".join(names[:12]) + (f", ... ({len(names)} fields)" if len(names) > 12 else "")

    def _json_column(self, spec: FieldSpec, values: list[Any]) -> np.ndarray:
        """One vector field of every record as an (n, length) array; an optional one may be null (NaN row)."""
        absent = np.array([value is None for value in values], bool)
        if absent.any():
            if spec.required:
                raise InvalidInput(f"instances[{int(np.argmax(absent))}].{spec.name}: missing (a list of "
                                   f"{spec.length} numbers is required)")
            filler = [math.nan] * spec.length
            values = [filler if value is None else value for value in values]
        for index, value in enumerate(values):
            if not isinstance(value, list):
                raise InvalidInput(f"instances[{index}].{spec.name}: expected a list of {spec.length} numbers, "
                                   f"got {_json_type(value)}")
            if len(value) != spec.length:
                raise InvalidInput(f"instances[{index}].{spec.name}: expected {spec.length} values, "
                                   f"got {len(value)}")
        array = _doubles(values)
        if array is None and not spec.required:  # an optional vector's unknown entries are null -> NaN
            values = [[math.nan if item is None else item for item in row] for row in values]
            array = _doubles(values)
        if array is None or array.shape != (len(values), spec.length) or not _all_numbers(values, array):
            index, position, value = _first_non_number(values)
            raise InvalidInput(f"instances[{index}].{spec.name}[{position}]: expected a number"
                               f"{'' if spec.required else ' or null'}, got {_json_type(value)}")
        self._check_values(spec, array, missing_allowed=not spec.required)
        return array

    def _json_scalars(self, instances: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Every scalar field of every record, checked as one (n, fields) matrix; null -> NaN (missing)."""
        names = [spec.name for spec in self._scalars]
        rows = [[record.get(name) for name in names] for record in instances]
        if not {type(value) for row in rows for value in row} <= _SCALAR_TYPES:
            index, column, value = next((i, j, v) for i, row in enumerate(rows) for j, v in enumerate(row)
                                        if type(v) not in _SCALAR_TYPES)
            spec = self._scalars[column]
            raise InvalidInput(f"instances[{index}].{spec.name}: expected a number"
                               f"{' or null' if spec.nullable else ''}, got {_json_type(value)}")
        matrix = np.array(rows, dtype=np.float64)
        missing = np.isnan(matrix)
        if (missing & ~self._nullable).any():
            index, column = np.argwhere(missing & ~self._nullable)[0]
            raise InvalidInput(f"instances[{index}].{names[column]}: missing (required)")
        with np.errstate(invalid="ignore"):
            bad = ~missing & (~np.isfinite(matrix) | (matrix < self._low) | (matrix > self._high)
                              | (self._integer & (matrix != np.round(matrix))))
        if bad.any():
            index, column = np.argwhere(bad)[0]
            spec = self._scalars[column]
            self._check_values(spec, matrix[:, column], missing_allowed=True)
        return {name: matrix[:, column] for column, name in enumerate(names)}

    def _check_values(self, spec: FieldSpec, values: np.ndarray, missing_allowed: bool | np.ndarray = False,
                      ranged: bool = True) -> None:
        """Finite (NaN only where `missing_allowed`), inside the field's range (where `ranged`), whole where it must
        be."""
        finite = np.isfinite(values)
        bad = ~finite & ~(missing_allowed & np.isnan(values))
        if bad.any():
            self._raise_at(spec, values, bad, "not a finite number (null, NaN and infinities are not allowed here)")
        with np.errstate(invalid="ignore"):
            outside = finite & ((values < spec.low) | (values > spec.high)) if ranged else np.zeros(values.shape, bool)
        if outside.any():
            self._raise_at(spec, values, outside, f"outside the physical range [{spec.low:g}, {spec.high:g}]")
        if spec.integer:
            fractional = finite & (values != np.round(values))
            if fractional.any():
                self._raise_at(spec, values, fractional, "not a whole number")

    @staticmethod
    def _raise_at(spec: FieldSpec, values: np.ndarray, bad: np.ndarray, problem: str) -> None:
        where = np.argwhere(bad)[0]
        index = int(where[0])
        position = f"[{int(where[1])}]" if values.ndim == 2 else ""
        raise InvalidInput(f"instances[{index}].{spec.name}{position}: {float(values[tuple(where)]):g} is {problem}")

    def _json_ids(self, instances: list[dict[str, Any]]) -> list[Any] | None:
        ids = [record.get(ID_FIELD) for record in instances]
        for index, value in enumerate(ids):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:  # an integer written as 5.0
                ids[index] = value = int(value)
            if value is None or (isinstance(value, str) and len(value) <= MAX_ID_CHARACTERS) or (
                    type(value) is int and -2**63 <= value < 2**63):
                continue
            got = _json_type(value) if not isinstance(value, (str, int)) else f"{value!r:.40}"
            raise InvalidInput(f"instances[{index}].id: expected a string (at most {MAX_ID_CHARACTERS} characters) "
                               f"or a 64-bit integer, got {got}")
        return ids if any(value is not None for value in ids) else None

    def _finish(self, arrays: dict[str, np.ndarray], n: int, ids: list[Any] | None) -> Batch:
        missing = [f.name for f in self.fields.values() if f.required and f.name not in arrays]
        if missing:
            raise InvalidInput(f"instances[0].{missing[0]}: missing (required)")
        if self.require_any:
            scalars = [value for value in arrays.values() if value.ndim == 1]
            has_value = np.isfinite(np.column_stack(scalars)).any(axis=1) if scalars else np.zeros(n, bool)
            for value in arrays.values():
                if value.ndim == 2:
                    has_value |= np.isfinite(value).any(axis=1)
            if not has_value.all():
                index = int(np.flatnonzero(~has_value)[0])
                raise InvalidInput(f"instances[{index}]: no input has a value (give at least one of "
                                   f"{self._field_list()})")
        return Batch(arrays, n, ids)


def _json_with_non_finite_numbers(body: bytes, error: orjson.JSONDecodeError) -> Any:
    """A body orjson refused for its NaN or infinities (a number beyond a double, 1e400, included), read by Python's
    parser, which takes them, so that the field is named; anything else it
    refused stays refused with orjson's error: text that is not UTF-8 (or starts with a byte-order mark), integers
    beyond 64 bits (Python's parser reads any), strings orjson cannot write back (lone surrogates). Only bodies orjson
    refuses come here, so valid JSON keeps orjson's speed."""
    refused = InvalidInput(f"body: not valid JSON ({error})")
    if b"NaN" not in body and b"Infinity" not in body and "infinity" not in str(error):  # 1e400 is infinity too
        raise refused
    try:
        document = json.loads(body.decode("utf-8"), parse_int=_int64)
        orjson.dumps(document)
    except (ValueError, TypeError, RecursionError, orjson.JSONEncodeError):
        raise refused from None
    return document


def _int64(text: str) -> int:
    """An integer of a JSON body, as orjson reads them: at most 64 bits (ValueError beyond)."""
    value = int(text)
    if not -2**63 <= value < 2**64:
        raise ValueError(f"integer {text[:30]} beyond 64 bits")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _doubles(rows: list[list[Any]]) -> np.ndarray | None:
    """The rows as one float64 array, or None when an entry is not a number: array('d') takes ints and floats (and
    bools, which `_all_numbers` looks at), never strings or null."""
    try:
        return np.vstack([np.frombuffer(array_of_doubles("d", row), dtype=np.float64) for row in rows])
    except (TypeError, ValueError, OverflowError):
        return None


def _all_numbers(rows: list[list[Any]], array: np.ndarray) -> bool:
    """Whether every entry is a JSON number: true/false pass as 1/0 into a double array, so only rows holding an
    exact 0 or 1 need their Python types looked at."""
    allowed = {int, float}
    suspects = np.flatnonzero(((array == 0.0) | (array == 1.0)).any(axis=1))
    return all(set(map(type, rows[i])) <= allowed for i in suspects)


def _first_non_number(rows: list[list[Any]]) -> tuple[int, int, Any]:
    for index, row in enumerate(rows):
        for position, value in enumerate(row):
            if type(value) not in (int, float):
                return index, position, value
    return 0, 0, None
