"""Fill in the data members script.py was not given, from the published layout (docs/DATA_FORMAT.md).

The published archive holds <name>/distillation_data_training.jsonl.zip and
<name>/distillation_data_validation.jsonl.zip, each an inner ZIP with one JSONL member, which may be
gzip-compressed. A member is picked only when there is exactly one candidate; otherwise the error
lists what the archive holds and names the flag to give.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass

from .archive import (
    GZIP_MAGIC,
    STREAM_ERRORS,
    DataError,
    locate_inner_zip,
    open_inner_zip,
    open_member,
    outer_member_names,
)

SPLIT_FLAGS = {"training": "train", "validation": "val"}
_JSONL_NAME = re.compile(r".+\.jsonl(\.gz)?")
_LISTED = 20  # member names shown in an error


@dataclass(frozen=True)
class SplitMembers:
    """Where one split's JSONL lies in the outer ZIP: inner ZIP, JSONL member, gzip or not (None = not given)."""

    inner_zip: str | None = None
    jsonl: str | None = None
    gzipped: bool | None = None


def inner_zip_candidates(members: list[str], split: str) -> list[str]:
    """Members named like the published layout's inner ZIP of `split` (in any folder)."""
    pattern = re.compile(rf"distillation_data_{split}\.jsonl(\.gz)?\.zip")
    return [name for name in members if pattern.fullmatch(posixpath.basename(name))]


def jsonl_candidates(members: list[str]) -> list[str]:
    """Members of an inner ZIP that are JSONL files (*.jsonl or *.jsonl.gz), folders left out."""
    return [name for name in members if not name.endswith("/") and _JSONL_NAME.fullmatch(posixpath.basename(name))]


def _listing(names: list[str]) -> str:
    more = f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return "[" + ", ".join(names[:_LISTED]) + more + "]"


def _only(candidates: list[str], members: list[str], what: str, flag: str) -> str:
    """The one candidate, else a DataError listing the members and naming the flag to give."""
    if len(candidates) == 1:
        return candidates[0]
    found = "none fits" if not candidates else f"{len(candidates)} fit ({', '.join(candidates)})"
    raise DataError(f"cannot pick the {what}: {found} among {_listing(members)}; give --{flag}")


def _jsonl_member(outer_path: str, inner_zip_path: str, jsonl_name: str | None,
                  jsonl_flag: str) -> tuple[str, bytes | None]:
    """(the JSONL member: jsonl_name, or the inner ZIP's only candidate; its first two bytes, None if absent)."""
    location = locate_inner_zip(outer_path, inner_zip_path)
    label = f"{outer_path}:{inner_zip_path}"
    try:
        with open_inner_zip(location, label) as inner:
            names = inner.namelist()
            if jsonl_name is None:
                jsonl_name = _only(jsonl_candidates(names), names,
                                   f"JSONL member of {inner_zip_path} (*.jsonl or *.jsonl.gz)", jsonl_flag)
            if jsonl_name not in names:
                return jsonl_name, None  # reading it reports the absence, listing the members
            try:  # the checked, bounded opener: an encrypted or lying member is refused in one line
                with open_member(inner, location, jsonl_name, label) as member:
                    return jsonl_name, member.read(2)
            except STREAM_ERRORS as error:
                raise DataError(f"{label}/{jsonl_name}: cannot read it ({type(error).__name__}: {error})") from None
    finally:
        if location.spilled:
            os.unlink(location.path)


def resolve_data_members(outer_path: str,
                         given: dict[str, SplitMembers]) -> tuple[dict[str, SplitMembers], list[str]]:
    """Each split's members, those given as None picked from the layout; and one line per choice made."""
    picked, resolved, outer_members = [], {}, None
    for split, prefix in SPLIT_FLAGS.items():
        inner_flag, jsonl_flag, gzip_flag = (f"{prefix}_outer_zip_internal_path", f"{prefix}_inner_zip_jsonl_filename",
                                             f"{prefix}_jsonl_is_gzipped")
        inner_zip, jsonl_name, gzipped = given[split].inner_zip, given[split].jsonl, given[split].gzipped
        if inner_zip is None:
            if outer_members is None:
                outer_members = outer_member_names(outer_path)
            what = f"{split} data in {outer_path} (<name>/distillation_data_{split}.jsonl.zip)"
            inner_zip = _only(inner_zip_candidates(outer_members, split), outer_members, what, inner_flag)
            picked.append(f"Picked --{inner_flag} {inner_zip} (the archive's only {split} inner ZIP)")
        if jsonl_name is None or gzipped is None:
            name, start = _jsonl_member(outer_path, inner_zip, jsonl_name, jsonl_flag)
            if jsonl_name is None:
                jsonl_name = name
                picked.append(f"Picked --{jsonl_flag} {name} (the only JSONL member of {inner_zip})")
            if gzipped is None:
                gzipped = start == GZIP_MAGIC if start is not None else name.endswith(".gz")
                if gzipped:
                    picked.append(f"Detected --{gzip_flag}: {name} starts with gzip's magic bytes")
        resolved[split] = SplitMembers(inner_zip, jsonl_name, gzipped)
    return resolved, picked
