"""Tags as item text: a tag-assignment file (user, item, tag id, ...: Last.fm's user_taggedartists.dat) and a
tag-name file (tag id, tag text: tags.dat), both delimited text read by position (a header line is skipped),
become each item's description: its tags, the most used first. Word2Vec and the text-using models read it
like any item text. The run keeps the assignments (who tagged what) apart from the items table, so that the
text stage leaves out the tags of the interactions it holds out (musicrec.pipeline.prepare.items_with_tags).
A tag-name file that is not UTF-8 (tags.dat is Latin-1) is decoded in its one-byte encoding
(musicrec.data.formats.sniff_encoding), said in a note.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from musicrec.data.delimited import Layout
from musicrec.data.detect import file_layout
from musicrec.data.formats import ENCODING_NAMES, sniff_encoding
from musicrec.data.schema import ReadStats, canonical_items
from musicrec.data.tables import read_csv_table
from musicrec.errors import DataError

MAX_TAGS = 30  # tags kept per item, the most used first (a long tail of one-off tags is mostly noise)


def tag_layout(path: str | Path, fields: int, what: str) -> Layout:
    """The file's delimited layout (musicrec.data.delimited); DataError when a line holds fewer than `fields`
    fields (3 for tag assignments, 2 for tag names)."""
    layout = file_layout(path)
    if layout.n_fields < fields:
        raise DataError(
            path,
            f"a {what} file needs at least {fields} fields per line, found {layout.n_fields}",
            hint="--tags takes user, item, tag id[, ...]; --tag-names takes tag id, tag text",
        )
    return layout


def read_positions(path: str | Path, fields: int, what: str) -> tuple[pd.DataFrame, ReadStats]:
    """The first `fields` columns of a delimited file as strings, named "1", "2", ...; decoded again in its
    one-byte encoding when it is not UTF-8."""
    stats = ReadStats(str(path), "delimited-" + what)
    layout = tag_layout(path, fields, what)
    df = read_csv_table(path, stats, layout=layout, positions=True)
    if stats.bad_utf8 and (encoding := sniff_encoding(path)) != "utf-8":
        bad = stats.bad_utf8
        stats = ReadStats(str(path), stats.format, encoding=encoding, delimiter=layout.name)
        df = read_csv_table(path, stats, layout=layout, positions=True)
        stats.notes.append(
            f"not UTF-8: {bad} line(s) hold bytes that are not UTF-8, so the file was decoded as "
            f"{ENCODING_NAMES[encoding]}"
        )
    stats.delimiter = layout.name
    out = df[[str(k) for k in range(1, fields + 1)]].astype("str").apply(lambda c: c.str.strip())
    stats.rows_kept = len(out)
    return out, stats


def tag_assignments(tags: str | Path, names: str | Path) -> tuple[pd.DataFrame, list[ReadStats]]:
    """(user_id, item_id, name) per tag assignment whose tag id the tag-name file names, with both files'
    read stats (a note counts the assignments left out for an unnamed tag id)."""
    assigned, tag_stats = read_positions(tags, 3, "tags")
    named, name_stats = read_positions(names, 2, "tag-names")
    text = assigned.rename(columns={"1": "user_id", "2": "item_id", "3": "tag"}).merge(
        named.rename(columns={"1": "tag", "2": "name"}).drop_duplicates("tag"), on="tag", how="left"
    )
    unnamed = int(text["name"].isna().sum())
    if unnamed:
        tag_stats.notes.append(f"{unnamed:,} tag assignment(s) name a tag id missing from {names}: left out")
    out = text.dropna(subset=["name"])[["user_id", "item_id", "name"]].reset_index(drop=True)
    tag_stats.notes.append(
        f"tags: {out['item_id'].nunique():,} items get their tags as text ({len(assigned):,} assignments)"
    )
    return out, [tag_stats, name_stats]


def tag_docs(assigned: pd.DataFrame) -> pd.DataFrame:
    """(item_id, text) per tagged item of tag_assignments' table: its tag names, most used first (ties by
    name), at most MAX_TAGS."""
    counts = assigned.groupby(["item_id", "name"]).size().rename("n").reset_index()
    counts = counts.sort_values(["item_id", "n", "name"], ascending=[True, False, True], kind="stable")
    top = counts.groupby("item_id", sort=False).head(MAX_TAGS)
    return top.groupby("item_id", sort=True)["name"].agg(", ".join).rename("text").reset_index()


def with_tag_text(items: pd.DataFrame, docs: pd.DataFrame) -> pd.DataFrame:
    """The items table with each tagged item's tags appended to its description (a row added for a tagged item
    the metadata does not list)."""
    extra = docs[~docs["item_id"].isin(items["item_id"])]
    added = canonical_items(pd.DataFrame({"item_id": extra["item_id"], "title": "", "description": ""}))
    out = pd.concat([items, added], ignore_index=True)
    text = out["item_id"].map(docs.set_index("item_id")["text"]).fillna("")
    joined = (out["description"].astype(str) + ". " + text).where(out["description"].astype(str) != "", text)
    return out.assign(description=joined.where(text != "", out["description"]))
