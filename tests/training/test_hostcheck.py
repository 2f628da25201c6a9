"""The huge-page advice: given only when the kernel's mode and the environment make big tensors slow."""

from __future__ import annotations

import pytest

from narm_lightning.training.hostcheck import HUGETLB_TUNABLE, RECOMMENDED_TUNABLES, slow_allocation_advice, thp_mode


@pytest.mark.parametrize(("text", "mode"), [("always [madvise] never\n", "madvise"),
                                            ("[always] madvise never", "always"),
                                            ("always madvise [never]", "never"), ("", None)])
def test_thp_mode_reads_the_bracketed_choice(text, mode) -> None:
    assert thp_mode(text) == mode


def test_advice_only_for_madvise_without_the_tunable() -> None:
    advice = slow_allocation_advice("madvise", {})
    full = ":".join(RECOMMENDED_TUNABLES)
    assert advice is not None and f"GLIBC_TUNABLES={full}" in advice and "\n" not in advice
    assert slow_allocation_advice("madvise", {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is not None
    # huge pages alone, or one heap threshold alone: still advised (each alone was measured slower)
    assert slow_allocation_advice("madvise", {"GLIBC_TUNABLES": HUGETLB_TUNABLE}) is not None
    assert slow_allocation_advice("madvise", {"GLIBC_TUNABLES": RECOMMENDED_TUNABLES[1]}) is not None
    # the two thresholds are the advice: huge pages are not asked for (their first touch costs more than they save
    # on ml-100k), nor refused when the user adds them
    assert HUGETLB_TUNABLE not in RECOMMENDED_TUNABLES and len(RECOMMENDED_TUNABLES) == 2
    assert slow_allocation_advice("madvise", {"GLIBC_TUNABLES": ":".join(RECOMMENDED_TUNABLES)}) is None
    assert slow_allocation_advice("madvise", {"GLIBC_TUNABLES": f"{HUGETLB_TUNABLE}:{full}"}) is None
    assert slow_allocation_advice("madvise", {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{full}"}) is None
    for mode in ("always", "never", None):
        assert slow_allocation_advice(mode, {}) is None


def test_a_cpu_run_logs_the_advice_on_a_madvise_host(tiny_root, tmp_path, monkeypatch, caplog) -> None:
    from narm_lightning.training import hostcheck
    from narm_lightning.training import run as training
    from tests.helpers import compose_train, tiny_overrides

    monkeypatch.setattr(hostcheck, "thp_mode", lambda: "madvise")
    monkeypatch.setattr(hostcheck, "_host_warned", False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    for run in ("first", "second"):  # a sweep runs many trials in one process: the advice comes once
        with caplog.at_level("WARNING", logger="narm_lightning.training.hostcheck"):
            training.train(compose_train(tiny_overrides(tiny_root, "epochs=1", "trainer.limit_train_batches=2")),
                           output_dir=tmp_path / run)
    advice = [r.getMessage() for r in caplog.records if ":".join(RECOMMENDED_TUNABLES) in r.getMessage()]
    assert len(advice) == 1 and len(advice[0]) < 240, advice  # one line: the value itself is 78 characters


def test_the_cpu_description_names_model_cores_and_amx() -> None:
    from narm_lightning.training.hostcheck import cpu_description, cpu_model

    intel = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse amx_bf16 amx_tile\n"
    amd = "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu sse avx512_bf16\n"
    assert cpu_description(intel).startswith("Intel(R) Xeon(R) Processor, ") and cpu_description(intel).endswith(
        " cores, AMX")
    assert cpu_description(amd).startswith("AMD EPYC 9B14, ") and "AMX" not in cpu_description(amd)
    assert cpu_model("processor\t: 0\n")  # no model name line: whatever the platform says, never empty


def test_the_cpu_kind_tells_intel_with_amx_from_zen_4_and_from_hosts_without_bf16_units() -> None:
    """Speed figures are kept per host kind: vendor, family, model and the bf16 units, as /proc/cpuinfo says."""
    from narm_lightning.training.hostcheck import cpu_kind

    intel = ("vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 167\nmodel name\t: Intel(R) Xeon(R) Processor\n"
             "flags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
    zen4 = ("vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC 9B14\n"
            "flags\t\t: fpu avx512f avx512_bf16\n")
    assert cpu_kind(intel) == "Intel family 6 model 167, AMX"
    assert cpu_kind(zen4) == "AMD family 25 model 17, AVX512-BF16, no AMX"
    assert cpu_kind(zen4.replace(" avx512_bf16", "")) == "AMD family 25 model 17, no bf16 units"
