"""Delimited text of any dialect (musicrec.data.delimited): real files copied to tmp, and small ones."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from musicrec.data.detect import detect_format, file_layout
from musicrec.data.readers import load_dataset, read_items, read_ratings
from musicrec.data.scales import infer_scale
from musicrec.errors import DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
LASTFM, CM100K = DATA / "hetrec2011_lastfm_2k", DATA / "cm100k"
needs_data = pytest.mark.skipif(
    not LASTFM.is_dir() or not CM100K.is_dir(), reason="../shared/data not present"
)


def copy(src: Path, tmp: Path) -> Path:
    return Path(shutil.copy(src, tmp / src.name))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@needs_data
def test_cm100k_tab_no_header_reads_user_item_rating_on_its_1_4_scale(tmp_path: Path) -> None:
    df, stats = read_ratings(copy(CM100K / "ratings.txt", tmp_path))
    assert (stats.format, stats.delimiter) == ("delimited-ratings", "tab (detected, no header)")
    assert len(df) == 103_584 and df.user_id.nunique() == 1_054 and df.item_id.nunique() == 1_084
    assert df.timestamp.isna().all() and any("4th field holds no times" in n for n in stats.notes)
    assert df.iloc[0][["user_id", "item_id", "rating"]].tolist() == ["701", "74476228", 3.0]
    scale = infer_scale(df.rating)
    assert (scale.min, scale.max) == (1.0, 4.0)


@needs_data
def test_lastfm_user_artists_tab_header_with_play_counts(tmp_path: Path) -> None:
    df, stats = read_ratings(copy(LASTFM / "user_artists.dat", tmp_path))
    assert stats.format == "generic-csv" and "named like a count" in stats.implicit
    assert len(df) == 92_834 and df.user_id.nunique() == 1_892 and df.item_id.nunique() == 17_632
    assert df.rating.max() == 352_698
    assert stats.delimiter == "tab (detected, with a header)"


@needs_data
def test_lastfm_artists_are_items_with_titles(tmp_path: Path) -> None:
    items, stats = read_items(copy(LASTFM / "artists.dat", tmp_path))
    assert stats.format == "items-csv" and len(items) == 17_632
    assert items.set_index("item_id").title["1"] == "MALICE MIZER"


def test_space_separated_runs_of_spaces(tmp_path: Path) -> None:
    rows = "".join(f"{u}   {i}  {1 + (u + i) % 4}\n" for u in range(10) for i in range(6))
    df, stats = read_ratings(write(tmp_path / "filmtrust.txt", rows))
    assert (
        stats.delimiter.startswith("spaces")
        and len(df) == 60
        and df.user_id.nunique() == 10
        and df.item_id.nunique() == 6
    )


def test_semicolon_with_header_and_quoted_fields(tmp_path: Path) -> None:
    text = (
        'user;item;rating;timestamp;review_text\n"u;1";i1;4;2015-06-01;"a\nsecond line"\n'
        "u2;i2;5;1433116800000;x\n"
    )
    df, stats = read_ratings(write(tmp_path / "export.csv", text))
    assert stats.delimiter.startswith("semicolon") and df.user_id.tolist() == ["u;1", "u2"]
    assert df.review_text.iloc[0] == "a\nsecond line"
    assert df.timestamp.tolist() == [1433116800, 1433116800]  # a date and epoch milliseconds


def test_headerless_comma_mapped_by_position(tmp_path: Path) -> None:
    """The CiaoDVD layout id,user,item,genre,rating,date."""
    rows = "".join(
        f"{k},{k % 7},{k % 5},g{k % 3},{1 + k % 5},2011-0{1 + k % 9}-1{k % 9}\n" for k in range(40)
    )
    path = write(tmp_path / "ciao.txt", rows)
    with pytest.raises(DataError, match="cannot tell how to read this file") as err:
        read_ratings(path)
    assert "--columns user=1" in err.value.hint and "first line: '0,0,0,g0,1" in str(err.value)
    df, _ = read_ratings(path, {"user": "2", "item": "3", "rating": "5", "timestamp": "6"})
    assert df.user_id.nunique() == 7 and df.item_id.nunique() == 5 and df.rating.between(1, 5).all()
    assert df.timestamp.notna().all()


def test_forced_delimiter_and_pipe(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "user_id|item_id|rating\nu1|i1|4\nu2|i2|5\n")
    assert read_ratings(path)[1].delimiter == "pipe (detected, with a header)"
    with pytest.raises(DataError, match="do not split into fields"):
        read_ratings(path, delimiter=";")


def test_pairs_without_value_are_implicit(tmp_path: Path) -> None:
    df, stats = read_ratings(write(tmp_path / "pairs.tsv", "u1\ti1\nu1\ti2\nu2\ti1\n"))
    assert df.rating.eq(1.0).all() and "no value column" in stats.implicit


def test_ambiguous_file_one_message(tmp_path: Path) -> None:
    path = write(tmp_path / "eu.csv", "".join(f"u{k};i{k};{k % 4},5\n" for k in range(20)))
    with pytest.raises(DataError, match="both comma .2 fields. and semicolon .3 fields.") as err:
        detect_format(path)
    assert "--delimiter" in err.value.hint and "--columns user=1,item=2,rating=3" in err.value.hint
    assert file_layout(path, ";").n_fields == 3


def test_header_only_file_fails(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="header line but no data rows"):
        detect_format(write(tmp_path / "h.csv", "user_id,item_id,rating\n"))
    with pytest.raises(DataError, match="header line but no data rows"):
        detect_format(write(tmp_path / "h.tsv", "userID\tartistID\tweight\n"))


def test_load_dataset_notes_the_delimiter(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.tsv", "user_id\titem_id\trating\n" + "".join(f"u{k}\ti{k}\t4\n" for k in range(5))
    )
    ds = load_dataset([path])
    assert ds.delimiters() == {str(path): "tab (detected, with a header)"} and len(ds.ratings) == 5


def _cli(*args: str, cwd: Path) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "musicrec", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )
    return out.returncode, out.stderr, time.perf_counter() - t0


@pytest.mark.parametrize("case", ["ambiguous", "header-only"])
def test_cli_refuses_before_prefect(tmp_path: Path, case: str) -> None:
    text = (
        "user_id,item_id,rating\n"
        if case == "header-only"
        else "".join(f"u{k};i{k};{k % 4},5\n" for k in range(9))
    )
    path = write(tmp_path / "r.csv", text)
    code, err, seconds = _cli("train", "--reviews", str(path), "--store", str(tmp_path / "s"), cwd=tmp_path)
    assert code == 2 and seconds < 5 and err.count("error:") == 1 and str(path) in err
    assert "Traceback" not in err and not (tmp_path / ".musicrec").exists()
    assert ("--delimiter" in err) if case == "ambiguous" else ("no data rows" in err)


def test_cli_positions_past_the_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "r.txt", "".join(f"u{k} i{k} {1 + k % 5}\n" for k in range(9)))
    code, err, _ = _cli(
        "train",
        "--reviews",
        str(path),
        "--columns",
        "user=1,item=2,rating=7",
        "--store",
        str(tmp_path / "s"),
        cwd=tmp_path,
    )
    assert code == 2 and "position 7" in err and "3 spaces-separated fields" in err


def test_pandas_frame_roundtrip_of_tab_quotes(tmp_path: Path) -> None:
    """A tab file's field that starts with a quote ("Weird Al" Yankovic in artists.dat) stays one field."""
    path = write(tmp_path / "a.dat", 'id\tname\turl\n1686\t"Weird Al" Yankovic\thttp://x\n1687\tB\tu\n')
    items, _ = read_items(path)
    assert isinstance(items, pd.DataFrame) and items.title.tolist() == ["Weird Al Yankovic", "B"]
