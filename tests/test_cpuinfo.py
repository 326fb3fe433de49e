"""unimm.cpuinfo reads the first matching field of /proc/cpuinfo, and nothing where there is none."""

from unimm.cpuinfo import cpuinfo


def test_reads_the_first_matching_field(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f\n\nvendor_id\t: Other\n")
    assert cpuinfo("vendor_id", path=info) == "AuthenticAMD"
    assert cpuinfo("flags", "Features", path=info) == "fpu avx2 avx512f"
    assert cpuinfo("model name", path=info) == ""


def test_missing_file_gives_empty(tmp_path):
    assert cpuinfo("vendor_id", path=tmp_path / "absent") == ""
