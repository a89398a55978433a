"""Quarantine: bad records are set aside with a reason, and a stage fails only when too many are bad."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

QUARANTINE_TABLE = "quarantine.parquet"
# The reason of a quarantined row of a labels table (a library's labels.csv, Stripe 82 table 2) begins with this: such
# a row is not an object, and `stellar predict`, which reads no labels, leaves it out of its answer.
LABEL_ROW = "label row"


def is_label_row(row: dict[str, str]) -> bool:
    """Whether a quarantined row is a labels table's (naming no file of the folder, or repeating an id), not an
    object's: a labels table of a whole library may come with a part of its files."""
    return row["reason"].startswith(LABEL_ROW)


def named_reasons(rows: list[dict[str, str]], width: int | None = None) -> list[str]:
    """Each distinct reason, the commonest first, naming its record (the file or table it came from, else its id)
    where the reason does not, and how many records it set aside where more than one: "an empty file (0 bytes)
    (gaia.csv)"; a reason longer than `width` characters is cut there."""
    by_reason: dict[str, list[str]] = {}
    for row in rows:
        by_reason.setdefault(row["reason"], []).append(row["source"] or row["id"])
    shown = []
    for reason, records in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0])):
        named = [record for record in dict.fromkeys(records) if record and record not in reason]
        if width is not None and len(reason) > width:
            reason = reason[:width - 3].rstrip() + "..."
        if len(records) > 1:
            reason += f" ({len(records)} records" + (f", e.g. {named[0]})" if named else ")")
        elif named:
            reason += f" ({named[0]})"
        shown.append(reason)
    return shown


class TooManyBadRecords(RuntimeError):
    """The share of quarantined records passed the configured limit."""


@dataclass
class Quarantine:
    """Collects (id, source, reason) rows for records a stage could not use."""

    stage: str
    rows: list[dict[str, str]] = field(default_factory=list)

    def add(self, record_id: str, reason: str, source: str = "") -> None:
        """Set one record aside, naming what was wrong with it."""
        self.rows.append({"id": str(record_id), "source": str(source), "reason": reason})

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> pa.Table:
        """The quarantine as a table (empty, with its schema, when nothing was bad)."""
        schema = pa.schema([("id", pa.string()), ("source", pa.string()), ("reason", pa.string())])
        return pa.Table.from_pylist(self.rows, schema=schema)

    def summary(self) -> str:
        """'3 quarantined', and the label rows apart where there are any ('0 quarantined, 511 label rows set
        aside'): a part of a library read with the whole library's labels.csv is not 511 bad objects."""
        objects = len(self.object_rows)
        labels = len(self.rows) - objects
        return f"{objects} quarantined" + (f", {labels} label row{'s' if labels != 1 else ''} set aside" if labels
                                           else "")

    @property
    def object_rows(self) -> list[dict[str, str]]:
        """The quarantined objects: every row but a labels table's (`is_label_row`)."""
        return [row for row in self.rows if not is_label_row(row)]

    def check(self, total: int, max_fraction: float) -> None:
        """Raise `TooManyBadRecords` when more than `max_fraction` of the `total` objects read were quarantined."""
        bad = self.object_rows
        if total == 0:
            labels = [row["reason"] for row in self.rows if is_label_row(row)]
            raise TooManyBadRecords(f"{self.stage}: no records to process" + (
                f": {len(labels)} label rows and no object, e.g. {labels[0]}" if labels else ""))
        share = len(bad) / total
        if share > max_fraction:
            raise TooManyBadRecords(
                f"{self.stage}: {len(bad)} of {total} records ({share:.0%}) quarantined, over the limit of "
                f"{max_fraction:.0%}; reasons include: {'; '.join(named_reasons(bad)[:5])}")
