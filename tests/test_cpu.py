"""The CPU's instruction-set flags: read without torch, recorded in reports, and deciding the int8 settings."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_onnx_parity.runtime import environment as cpu

# /proc/cpuinfo lines of the AMD EPYC (Zen 3: AVX2, no AVX-512, no VNNI) and of an Intel Xeon with AVX-512 VNNI
ZEN3 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n"
        "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht "
        "syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq "
        "pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm "
        "cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext invpcid_single ssbd ibrs ibpb stibp vmmcall "
        "fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 "
        "clzero xsaveerptr rdpru wbnoinvd arat npt nrip_save umip vaes vpclmulqdq rdpid fsrm\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core Processor\nflags\t\t: fpu\n")
XEON_VNNI = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\n"
             "flags\t\t: fpu sse4_1 sse4_2 avx f16c fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni\n")
GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp\n"


def play(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, machine: str = "x86_64") -> None:
    """Make this process see another CPU: the flag reader reads ``text`` as /proc/cpuinfo."""
    info_file = tmp_path / "cpuinfo"
    info_file.write_text(text)
    parsed = cpu.read_cpuinfo(info_file)
    monkeypatch.setattr(cpu, "probe_cpu", lambda: (parsed["model"], machine, frozenset(parsed["flags"])))


def test_cpuinfo_is_parsed_for_the_model_and_the_relevant_flags(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(ZEN3)
    info = cpu.read_cpuinfo(path)
    assert info["model"] == "AMD EPYC 7B13 64-Core Processor"
    assert {"avx2", "fma", "sse4_1"} <= info["flags"] and "avx512f" not in info["flags"]
    assert "fpu" in info["flags"] and len(info["flags"]) > 50  # the first CPU's line, not the last one's
    assert cpu.read_cpuinfo(tmp_path / "missing") == {"model": None, "flags": set()}


def test_reduce_range_follows_onnxruntimes_advice_per_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    play(monkeypatch, tmp_path, ZEN3)
    info = cpu.cpu_info()
    assert info["flags"] == ["sse4_1", "avx", "avx2", "fma", "f16c"] and not cpu.has_vnni()
    assert cpu.int8_reduce_range() is True  # x86-64 without VNNI: U8S8 saturates, 7-bit weights
    play(monkeypatch, tmp_path, XEON_VNNI)
    assert cpu.has_vnni() and cpu.int8_reduce_range() is False
    play(monkeypatch, tmp_path, GRAVITON, machine="aarch64")
    assert cpu.cpu_info()["flags"] == ["asimd", "asimddp", "fphp", "asimdhp"] and cpu.int8_reduce_range() is False
    play(monkeypatch, tmp_path, "", machine="AMD64")  # flags unreadable on x86 (e.g. Windows): the safe setting
    assert cpu.cpu_info()["flags"] is None and cpu.int8_reduce_range() is True and cpu.cpu_flags_text() == "unknown"


def test_quantize_and_the_int8_cache_key_follow_the_flag_reader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pytest_onnx_parity.onnxfile.variants import int8_format
    from pytest_onnx_parity.onnxfile.quantize import _reduce_range, int8_reduce_range_choice

    play(monkeypatch, tmp_path, ZEN3)
    assert int8_reduce_range_choice() is True and int8_format(int8_reduce_range_choice()) == "U8S8-reduce_range"
    chosen, why = _reduce_range(None)
    assert chosen and why.startswith("auto: x86-64 without VNNI") and "AMD EPYC 7B13" in why and "avx2" in why
    assert _reduce_range(False)[0] is False and _reduce_range(False)[1].startswith("given, against ONNX Runtime's advice")
    play(monkeypatch, tmp_path, XEON_VNNI)
    assert int8_reduce_range_choice() is False and int8_format(False) == "U8S8"
    assert int8_reduce_range_choice(True) is True  # given wins


def test_the_report_environment_records_the_cpu_and_its_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pytest_onnx_parity.runtime.environment import environment
    from pytest_onnx_parity.report.schema import write_report

    play(monkeypatch, tmp_path, ZEN3)
    env = environment()
    assert env["cpu"] == "AMD EPYC 7B13 64-Core Processor" and env["machine"] == "x86_64"
    assert env["cpu_flags"] == "sse4_1 avx avx2 fma f16c" and {"torch", "onnxruntime"} <= set(env)
    write_report(tmp_path / "r.json", [])
    written = json.loads((tmp_path / "r.json").read_text())["environment"]
    assert written["cpu_flags"] == "sse4_1 avx avx2 fma f16c" and written["cpu"].startswith("AMD EPYC")
    monkeypatch.undo()
    here = environment()  # this machine: flags are read (Linux CI) and name the vector extensions
    if sys.platform.startswith("linux") and here["machine"] in ("x86_64", "AMD64"):
        assert "avx2" in here["cpu_flags"].split() or "sse4_1" in here["cpu_flags"].split()


def test_ci_can_print_the_flags_without_loading_heavy_libraries() -> None:
    code = ("import sys, runpy; runpy.run_module('pytest_onnx_parity.runtime.environment', run_name='__main__'); "
            "print(sorted(m for m in ('torch', 'timm', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("CPU: ") and "instruction-set flags: " in out and "int8 reduce_range: " in out
    assert out.strip().endswith("[]"), out
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert ci.index("python3 -m pytest_onnx_parity.runtime.environment") < ci.index("python3 -m pytest\n")
