"""Where the NAS-Bench-201 tables are read from, and how tests treat shared data that lnas does not ship."""

import gzip
from pathlib import Path

import pytest

import lnas
from lnas.hardware.nb201 import Nb201LatencyTable
from lnas.io import NB201_TABLES, nb201_table, read_csv_rows

CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_without_lnas_data_dir_the_tables_shipped_with_the_package_are_read(monkeypatch):
    monkeypatch.delenv("LNAS_DATA_DIR", raising=False)
    columns = {"nb201_cifar10.csv": ["idx", "arch_str", "cifar10_test_acc", "cifar10_valid_acc", "params_m"],
               "nb201_latency.csv": ["idx", "edgegpu_ms", "raspi4_ms", "edgetpu_ms", "pixel3_ms", "eyeriss_ms", "fpga_ms",
                                     "gold_6226_ms", "titan_rtx_1_ms", "pixel2_ms"]}
    for name in NB201_TABLES:
        source = nb201_table(name)
        assert source.name == f"{name}.gz" and Path(str(source)).is_relative_to(Path(lnas.__file__).parent)
        rows = read_csv_rows(source)
        assert list(rows[0]) == columns[name] and [row["idx"] for row in rows] == [str(i) for i in range(15625)]
    assert read_csv_rows(nb201_table("nb201_cifar10.csv"))[1]["arch_str"] == CELL
    assert Nb201LatencyTable("edgegpu").latency_ms(CELL) == 6.54769  # row 1 of nb201_latency.csv


def test_the_shipped_tables_are_the_shared_files_byte_for_byte(shared_data_file, monkeypatch):
    shared = {name: shared_data_file(f"nb201/{name}").read_bytes() for name in NB201_TABLES}
    monkeypatch.delenv("LNAS_DATA_DIR", raising=False)
    for name in NB201_TABLES:
        assert gzip.decompress(nb201_table(name).read_bytes()) == shared[name]


def test_lnas_data_dir_replaces_the_shipped_tables(tmp_path, monkeypatch):
    (tmp_path / "nb201").mkdir()
    (tmp_path / "nb201" / "nb201_cifar10.csv").write_text(f"idx,arch_str,cifar10_test_acc,cifar10_valid_acc,params_m\n0,{CELL},90.0,88.0,0.8\n")
    (tmp_path / "nb201" / "nb201_latency.csv").write_text("idx,edgegpu_ms,raspi4_ms\n0,1.5,2.5\n")
    monkeypatch.setenv("LNAS_DATA_DIR", str(tmp_path))
    assert nb201_table("nb201_latency.csv") == tmp_path / "nb201" / "nb201_latency.csv"
    assert Nb201LatencyTable("raspi4").latency_ms(CELL) == 2.5
    other = tmp_path / "other"
    other.mkdir()
    (other / "nb201_cifar10.csv").write_text(f"idx,arch_str\n0,{CELL}\n")
    (other / "nb201_latency.csv").write_text("idx,edgegpu_ms\n0,7.0\n")
    assert Nb201LatencyTable("edgegpu", data_path=other).latency_ms(CELL) == 7.0  # a folder given to the estimator comes first


def test_a_missing_or_unknown_table_names_the_file_and_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("LNAS_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/nb201/nb201_cifar10.csv not found: \$LNAS_DATA_DIR={tmp_path} replaces the tables"):
        Nb201LatencyTable("edgegpu")
    with pytest.raises(ValueError, match=r"unknown NAS-Bench-201 table 'nb201_cifar100.csv'; allowed: \['nb201_cifar10.csv', 'nb201_latency.csv'\]"):
        nb201_table("nb201_cifar100.csv")


def test_missing_shared_data_skips_the_test_or_fails_it_where_it_is_required(shared_data_file, tmp_path, monkeypatch):
    monkeypatch.setenv("LNAS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LNAS_REQUIRE_SHARED_DATA", raising=False)
    reason = rf"needs {tmp_path}/cifar10/cifar10_train_1000.npz: set LNAS_DATA_DIR to the folder holding cifar10/cifar10_train_1000.npz"
    with pytest.raises(pytest.skip.Exception, match=reason):
        shared_data_file("cifar10/cifar10_train_1000.npz")
    monkeypatch.setenv("LNAS_REQUIRE_SHARED_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match=reason):
        shared_data_file("cifar10/cifar10_train_1000.npz")
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar10_train_1000.npz").write_bytes(b"")
    assert shared_data_file("cifar10/cifar10_train_1000.npz") == tmp_path / "cifar10" / "cifar10_train_1000.npz"
