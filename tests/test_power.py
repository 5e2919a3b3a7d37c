"""Energy, clocks and throttling (resbench.engine.power): every NVML path with a fake pynvml, RAPL on a fake tree."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import pytest
import torch

from resbench import env
from resbench.engine import power
from resbench.engine.measure import Config, Result, measure

CUDA0 = torch.device("cuda", 0)
ENERGY_FIELDS = ("avg_power_w", "joules_per_image", "images_per_joule", "energy_j")
NVML_FIELDS = ("sm_clock_mhz_start", "sm_clock_mhz_end", "temperature_c_start", "temperature_c_end")


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # pynvml's names
    pass


class NVMLError_FunctionNotFound(NVMLError):
    pass


def fake_nvml(
    watts: float = 300.0,
    counter: bool = True,
    counter_step_s: float = 0.001,
    reasons=lambda call: 0,
    event_reasons: bool = True,
) -> types.ModuleType:
    """A pynvml stand-in: a card drawing ``watts``, its energy counter stepping every ``counter_step_s``."""
    m = types.ModuleType("pynvml")
    m.NVMLError, m.NVMLError_NotSupported = NVMLError, NVMLError_NotSupported
    m.NVML_CLOCK_SM, m.NVML_TEMPERATURE_GPU = 1, 0
    m.calls = {"init": 0, "shutdown": 0, "bus_ids": [], "indices": [], "uuids": [], "reasons": 0}
    t0 = time.perf_counter()
    clocks, temps = iter(range(1980, 0, -15)), iter(range(40, 200))

    def init():
        m.calls["init"] += 1

    def shutdown():
        m.calls["shutdown"] += 1

    def by_bus_id(bus_id):
        m.calls["bus_ids"].append(bus_id)
        return "handle"

    def by_index(i):
        m.calls["indices"].append(i)
        return "handle"

    def by_uuid(uuid):
        m.calls["uuids"].append(uuid)
        return "handle"

    def energy(handle):
        if not counter:
            raise NVMLError_NotSupported()
        steps = int((time.perf_counter() - t0) / counter_step_s)
        return round(steps * counter_step_s * watts * 1e3)  # mJ

    def read_reasons(handle):
        m.calls["reasons"] += 1
        return reasons(m.calls["reasons"])

    def new_reasons(handle):
        if not event_reasons:
            raise NVMLError_FunctionNotFound()
        return read_reasons(handle)

    m.nvmlInit, m.nvmlShutdown = init, shutdown
    m.nvmlDeviceGetHandleByPciBusId = by_bus_id
    m.nvmlDeviceGetHandleByIndex = by_index
    m.nvmlDeviceGetHandleByUUID = by_uuid
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetPowerUsage = lambda handle: round(watts * 1e3)  # mW
    m.nvmlDeviceGetClockInfo = lambda handle, kind: next(clocks)
    m.nvmlDeviceGetTemperature = lambda handle, sensor: next(temps)
    m.nvmlDeviceGetCurrentClocksEventReasons = new_reasons
    m.nvmlDeviceGetCurrentClocksThrottleReasons = read_reasons
    return m


@pytest.fixture
def gpu(monkeypatch):
    """Pretend cuda:0 is the card at PCI 0000:3b:00.0, and install a fake pynvml made by the test."""
    props = types.SimpleNamespace(pci_domain_id=0, pci_bus_id=0x3B, pci_device_id=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)

    def install(**kwargs) -> types.ModuleType:
        fake = fake_nvml(**kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    return install


def region(meter: power.Meter, seconds: float = 0.25) -> dict:
    with meter:
        time.sleep(seconds)
    return meter.fields(images=1000)


def test_energy_counter_over_the_region(gpu):
    fake = gpu(watts=300.0)
    f = region(power.Meter(CUDA0, sample_s=0.005))
    assert f["power_method"] == "nvml_energy_counter"
    assert f["avg_power_w"] == pytest.approx(300.0, rel=0.1)
    assert f["joules_per_image"] == pytest.approx(f["energy_j"] / 1000)
    assert f["images_per_joule"] == pytest.approx(1 / f["joules_per_image"])
    assert fake.calls["bus_ids"] == ["00000000:3b:00.0"]  # the card torch calls cuda:0
    assert fake.calls["init"] == fake.calls["shutdown"] == 1


def test_counter_missing_falls_back_to_sampled_power(gpu):
    gpu(watts=250.0, counter=False)
    meter = power.Meter(CUDA0, sample_s=0.005)
    f = region(meter)
    assert f["power_method"] == "nvml_power_sampled"
    assert f["avg_power_w"] == pytest.approx(250.0)
    assert f["energy_j"] == pytest.approx(250.0 * meter.reading.wall_s)
    assert f["images_per_joule"] == pytest.approx(1000 / f["energy_j"])


def test_counter_too_coarse_for_the_region_falls_back_to_sampled_power(gpu):
    gpu(watts=120.0, counter_step_s=10.0)  # the counter never steps inside a 0.1 s region
    f = region(power.Meter(CUDA0, sample_s=0.005), seconds=0.1)
    assert f["power_method"] == "nvml_power_sampled"
    assert f["avg_power_w"] == pytest.approx(120.0)


def test_clocks_and_temperature_at_both_edges(gpu):
    gpu()
    f = region(power.Meter(CUDA0), seconds=0.01)
    assert (f["sm_clock_mhz_start"], f["sm_clock_mhz_end"]) == (1980, 1965)
    assert (f["temperature_c_start"], f["temperature_c_end"]) == (40, 41)


def test_temperature_from_the_newer_call_where_the_old_one_is_gone(gpu):
    fake = gpu()

    def gone(handle, sensor):
        raise NVMLError_FunctionNotFound()

    fake.nvmlDeviceGetTemperature = gone
    fake.nvmlDeviceGetTemperatureV = lambda handle, sensor: 55
    f = region(power.Meter(CUDA0), seconds=0.0)
    assert (f["temperature_c_start"], f["temperature_c_end"]) == (55, 55)
    assert f["sm_clock_mhz_start"] == 1980


@pytest.mark.parametrize(
    ("bits", "names"),
    [
        (0x04, "sw_power_cap"),
        (0x20 | 0x40, "sw_thermal_slowdown, hw_thermal_slowdown"),
        (0x08 | 0x80, "hw_slowdown, hw_power_brake_slowdown"),
        (0x01 | 0x04, "sw_power_cap"),  # idle beside a power cap: still throttled
    ],
)
def test_throttle_reasons_name_what_held_the_card_back(gpu, bits, names):
    gpu(reasons=lambda call: bits)
    f = region(power.Meter(CUDA0), seconds=0.01)
    assert f["throttled"] is True
    assert f["throttle_reasons"] == names


@pytest.mark.parametrize("bits", [0x00, 0x01, 0x01 | 0x02 | 0x10 | 0x100])
def test_idle_and_clock_settings_are_not_throttling(gpu, bits):
    gpu(reasons=lambda call: bits)
    f = region(power.Meter(CUDA0), seconds=0.01)
    assert f["throttled"] is False
    assert f["throttle_reasons"] is None


def test_a_throttle_between_the_edges_is_caught_by_the_samples(gpu):
    fake = gpu(reasons=lambda call: 0x20 if call == 3 else 0)  # only the second sample sees it
    f = region(power.Meter(CUDA0, sample_s=0.005), seconds=0.1)
    assert fake.calls["reasons"] > 3
    assert (f["throttled"], f["throttle_reasons"]) == (True, "sw_thermal_slowdown")


def test_older_drivers_give_throttle_reasons_by_the_older_name(gpu):
    gpu(reasons=lambda call: 0x04, event_reasons=False)
    f = region(power.Meter(CUDA0), seconds=0.01)
    assert (f["throttled"], f["throttle_reasons"]) == (True, "sw_power_cap")


def test_throttle_bits_match_pynvml():
    nvml = pytest.importorskip("pynvml", reason="nvidia-ml-py not installed")
    if not hasattr(nvml, "nvmlClocksEventReasonSwPowerCap"):
        pytest.skip("this pynvml predates the clock-event names")
    expected = {
        "sw_power_cap": nvml.nvmlClocksEventReasonSwPowerCap,
        "hw_slowdown": nvml.nvmlClocksEventReasonHwSlowdown,
        "sw_thermal_slowdown": nvml.nvmlClocksEventReasonSwThermalSlowdown,
        "hw_thermal_slowdown": nvml.nvmlClocksEventReasonHwThermalSlowdown,
        "hw_power_brake_slowdown": nvml.nvmlClocksEventReasonHwPowerBrakeSlowdown,
    }
    assert {name: bit for bit, name in power.THROTTLE_REASONS.items()} == expected
    assert not power.throttle_names(nvml.nvmlClocksEventReasonGpuIdle)


def test_pynvml_missing_leaves_the_fields_empty_and_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    f = region(power.Meter(CUDA0), seconds=0.0)
    assert f["power_method"] == "pynvml not installed (pip install nvidia-ml-py)"
    assert all(f[k] is None for k in (*ENERGY_FIELDS, *NVML_FIELDS, "throttled"))


def test_nvml_without_a_driver_says_why(gpu):
    fake = gpu()

    def no_driver():
        raise NVMLError("Driver Not Loaded")

    fake.nvmlInit = no_driver
    f = region(power.Meter(CUDA0), seconds=0.0)
    assert f["power_method"] == "NVML unavailable: Driver Not Loaded"
    assert f["avg_power_w"] is None


def test_cuda_visible_devices_names_the_card_without_pci_ids(gpu, monkeypatch):
    fake = gpu()
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-8a1b")
    power.nvml_handle(fake, torch.device("cuda", 0))
    power.nvml_handle(fake, torch.device("cuda", 1))
    assert (fake.calls["indices"], fake.calls["uuids"]) == ([2], ["GPU-8a1b"])
    f = region(power.Meter(torch.device("cuda", 2)), seconds=0.0)
    assert f["power_method"].startswith("no NVML device for cuda:2")
    assert fake.calls["init"] == fake.calls["shutdown"]


def rapl_tree(root: Path, zones: dict[str, tuple[str, int, int]]) -> Path:
    """Write powercap zones: folder -> (name, energy_uj, max_energy_range_uj)."""
    (root / "intel-rapl").mkdir(parents=True)  # the control type: no name, no counter
    for folder, (name, uj, max_uj) in zones.items():
        (root / folder).mkdir()
        (root / folder / "name").write_text(name + "\n")
        (root / folder / "energy_uj").write_text(f"{uj}\n")
        (root / folder / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return root


def set_uj(root: Path, folder: str, uj: int) -> None:
    (root / folder / "energy_uj").write_text(f"{uj}\n")


def test_rapl_sums_packages_across_a_wrap(tmp_path):
    top = 262_143_328_850
    root = rapl_tree(
        tmp_path,
        {
            "intel-rapl:0": ("package-0", top - 1_000_000, top),
            "intel-rapl:0:0": ("core", 5, top),  # a subzone of package-0: not counted again
            "intel-rapl:1": ("package-1", 5_000_000, top),
            "intel-rapl-mmio:0": ("package-0", 7, top),  # the same package through MMIO
        },
    )
    meter = power.Meter("cpu", powercap=root)
    with meter:
        set_uj(root, "intel-rapl:0", 1_000_000)  # wrapped: 2 J
        set_uj(root, "intel-rapl:1", 8_000_000)  # 3 J
        set_uj(root, "intel-rapl:0:0", 900_000_000)
        set_uj(root, "intel-rapl-mmio:0", 900_000_000)
    f = meter.fields(images=10)
    assert f["power_method"] == "rapl"
    assert f["energy_j"] == pytest.approx(5.0)
    assert f["joules_per_image"] == pytest.approx(0.5)
    assert f["images_per_joule"] == pytest.approx(2.0)
    assert f["avg_power_w"] == pytest.approx(5.0 / meter.reading.wall_s)
    assert all(f[k] is None for k in (*NVML_FIELDS, "throttled", "throttle_reasons"))


def test_no_rapl_says_why(tmp_path):
    f = region(power.Meter("cpu", powercap=tmp_path / "powercap"), seconds=0.0)
    assert f["power_method"] == f"no RAPL in {tmp_path / 'powercap'}"
    assert all(f[k] is None for k in ENERGY_FIELDS)
    root = rapl_tree(tmp_path / "only-dram", {"intel-rapl:0:2": ("dram", 1, 10)})
    f = region(power.Meter("cpu", powercap=root), seconds=0.0)
    assert f["power_method"] == f"no RAPL package domain in {root}"


def test_rapl_readable_by_root_only_says_so(tmp_path, monkeypatch):
    root = rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 1, 10**9)})
    read_text = Path.read_text

    def root_only(self, *args, **kwargs):
        if self.name == "energy_uj":  # mode 0400 since Linux 5.10, and tests may run as root
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", root_only)
    f = region(power.Meter("cpu", powercap=root), seconds=0.0)
    assert f["power_method"].startswith("RAPL not readable: Permission denied")
    assert "root-only since Linux 5.10" in f["power_method"]
    assert f["energy_j"] is None


def test_a_rapl_counter_that_does_not_move_gives_no_energy(tmp_path):
    root = rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 42, 10**9)})
    f = region(power.Meter("cpu", powercap=root), seconds=0.0)
    assert f["power_method"].startswith("RAPL counter did not advance")
    assert all(f[k] is None for k in ENERGY_FIELDS)


def test_no_power_reading_on_other_devices():
    f = region(power.Meter("meta"), seconds=0.0)
    assert f["power_method"] == "no power reading on meta"


def check_energy_fields(r: Result) -> None:
    """Energy fields all present or all absent, and consistent with the Result's own counts."""
    assert r.status == "ok" and r.power_method
    present = [getattr(r, k) is not None for k in ENERGY_FIELDS]
    assert all(present) or not any(present)
    if all(present):
        assert r.joules_per_image == pytest.approx(r.energy_j / (r.iterations * r.batch_size))
        assert r.images_per_joule == pytest.approx(1 / r.joules_per_image)
        assert r.avg_power_w > 0


FAST = {"budget_s": 0.1, "max_warmup_s": 0.1, "peak": False}


def test_measure_on_cpu_fills_power_method():
    r = measure(Config("small_resnet20", 2, device="cpu"), **FAST)
    check_energy_fields(r)
    assert r.throttled is None and r.sm_clock_mhz_start is None  # NVML fields are for CUDA


def test_measure_on_cpu_with_rapl_records_consistent_energy(tmp_path, monkeypatch):
    root = rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 0, 10**12)})
    read_text = Path.read_text
    reads = iter(range(0, 10**12, 250_000))  # each read of the counter: 0.25 J later

    def advancing(self, *args, **kwargs):
        if self.name == "energy_uj":
            return f"{next(reads)}\n"
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", advancing)
    monkeypatch.setattr(power, "RAPL_ROOT", root)
    r = measure(Config("small_resnet20", 2, device="cpu"), **FAST)
    check_energy_fields(r)
    assert r.power_method == "rapl"
    assert r.energy_j == pytest.approx(0.25)  # three reads: on opening, at the start, at the end


def test_env_records_driver_and_power_limits(monkeypatch):
    fake = fake_nvml()
    fake.nvmlDeviceGetCount = lambda: 2
    fake.nvmlDeviceGetName = lambda h: "NVIDIA H100 80GB HBM3"
    fake.nvmlDeviceGetPciInfo = lambda h: types.SimpleNamespace(busId=b"00000000:3B:00.0")
    fake.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    fake.nvmlSystemGetDriverVersion = lambda: "580.95.05"
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    info = env.collect_env()
    assert info["nvidia_driver"] == "580.95.05"
    assert [g["power_limit_w"] for g in info["nvml_gpus"]] == [700.0, 700.0]
    assert info["nvml_gpus"][0]["pci_bus_id"] == "00000000:3B:00.0"
    assert fake.calls["init"] == fake.calls["shutdown"] == 1
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert env.collect_env()["nvml_gpus"] == []


@pytest.mark.cuda
def test_measure_on_cuda_records_power_and_clocks():
    pytest.importorskip("pynvml", reason="pip install nvidia-ml-py (the gpu extra)")
    r = measure(Config("resnet18", 64, device="cuda", precision="bf16"), budget_s=1.0, peak=False)
    check_energy_fields(r)
    assert r.power_method in ("nvml_energy_counter", "nvml_power_sampled"), r.power_method
    assert r.avg_power_w is not None and r.avg_power_w > 0
    assert all(getattr(r, k) > 0 for k in NVML_FIELDS)
    assert r.throttled is not None
    assert (r.throttle_reasons is not None) == r.throttled


def test_repeats_add_up_their_energy_and_keep_any_throttling():
    a = power.Reading("rapl", energy_j=2.0, wall_s=1.0, sm_clock_mhz_start=1980, throttled=False)
    b = power.Reading("rapl", energy_j=4.0, wall_s=1.0, sm_clock_mhz_end=1700, throttled=True,
                      throttle_reasons="sw_thermal_slowdown")  # fmt: skip
    f = power.fields(power.combine([a, b]), images=30)
    assert f["energy_j"] == 6.0 and f["avg_power_w"] == 3.0
    assert f["joules_per_image"] == pytest.approx(0.2) and f["images_per_joule"] == pytest.approx(5)
    assert f["sm_clock_mhz_start"] == 1980 and f["sm_clock_mhz_end"] == 1700
    assert f["throttled"] is True and f["throttle_reasons"] == "sw_thermal_slowdown"
    c = power.Reading("no RAPL in /sys/class/powercap")
    assert power.fields(power.combine([c, c]), images=30)["energy_j"] is None
