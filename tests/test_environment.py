"""The CPU named in every summary and benchmark: model name plus family and model numbers."""

import platform

from assertdistill.distill.summary import cpu_name

TWO_PROCESSORS = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480C
"""


def test_first_processor_named_with_family_and_model(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(TWO_PROCESSORS)
    assert cpu_name(str(path)) == "AMD EPYC (family 26, model 2)"


def test_name_without_numbers_is_the_name_alone(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Some ARM core\n")
    assert cpu_name(str(path)) == "Some ARM core"


def test_missing_cpuinfo_gives_the_platforms_name(tmp_path):
    assert cpu_name(str(tmp_path / "absent")) == (platform.processor() or "unknown")
