"""Energy, clocks and throttling over a measured region: NVML on CUDA, RAPL on CPUs.

    with power.Meter(device) as meter:
        ...  # the measured region
    fields = meter.fields(images)  # avg_power_w, joules_per_image, ... for a Result

CUDA, through NVML (``pynvml``, package nvidia-ml-py, an optional dependency): the card's total-energy
counter (mJ, Volta and later) over the region, where the card has one and it stepped at least
``MIN_COUNTER_STEPS`` times in it (the counter advances in steps of the driver's update period, so over
a region only a few steps long its edges would cost tens of percent); otherwise the board power (mW)
sampled every ``SAMPLE_S`` in a background thread, integrated over time. Where NVML reports power as
a trailing average (1 s on Ampere and later, GA100 aside), a region shorter than that reads partly the
warm-up just before it, which ran the same step. The SM clock and temperature are read at both edges;
the clock-event ("throttle") reasons at both edges and with every sample. The sampler holds the GIL
for microseconds per sample (NVML calls release it), so the measured loop barely notices it.

CPUs: the package domains of Intel/AMD RAPL under /sys/class/powercap, whose counters wrap at
``max_energy_range_uj``. They cover whole sockets, so other processes' work counts too (a Result's
``foreign_cpu`` says how much there was). Elsewhere every field is empty and ``power_method`` says why.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

RAPL_ROOT = Path("/sys/class/powercap")
# 50 Hz: finer than NVML refreshes board power; a few NVML calls per sample cost tens of microseconds
SAMPLE_S = 0.02
MIN_COUNTER_STEPS = 10  # fewer steps of the energy counter in the region: integrate sampled power
NO_PYNVML = "pynvml not installed (pip install nvidia-ml-py)"
# clock-event reason bits (nvml.h, nvmlClocksEventReason*) that mean the card was held back; the
# others (GPU idle, application clocks setting, sync boost, display clocks) are not throttling
THROTTLE_REASONS = {
    0x04: "sw_power_cap",
    0x08: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}
# the newer name first; the older one is deprecated but is all that drivers before r535 have
_REASON_FUNCTIONS = (
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
)


@dataclass(frozen=True)
class Reading:
    """What a Meter found over one region; None where it could not tell."""

    method: str  # "nvml_energy_counter", "nvml_power_sampled", "rapl", or why there is no reading
    energy_j: float | None = None
    wall_s: float | None = None  # the region as the meter timed it
    sm_clock_mhz_start: int | None = None
    sm_clock_mhz_end: int | None = None
    temperature_c_start: int | None = None
    temperature_c_end: int | None = None
    throttled: bool | None = None  # any THROTTLE_REASONS bit seen at an edge or in a sample
    throttle_reasons: str | None = None  # their names, comma-separated


def combine(readings: list[Reading]) -> Reading:
    """One Reading over several regions (a Config's repeats): energy and time add up."""
    first, last = readings[0], readings[-1]
    energies = [r.energy_j for r in readings]
    flags = [r.throttled for r in readings if r.throttled is not None]
    reasons = {n for r in readings if r.throttle_reasons for n in r.throttle_reasons.split(",")}
    return Reading(
        method=first.method,
        energy_j=sum(energies) if None not in energies else None,
        wall_s=sum(r.wall_s or 0.0 for r in readings) or None,
        sm_clock_mhz_start=first.sm_clock_mhz_start,
        sm_clock_mhz_end=last.sm_clock_mhz_end,
        temperature_c_start=first.temperature_c_start,
        temperature_c_end=last.temperature_c_end,
        throttled=any(flags) if flags else None,
        throttle_reasons=",".join(sorted(reasons)) or None,
    )


def throttle_names(bits: int) -> list[str]:
    """The throttling reasons set in an NVML clock-event bitmask."""
    return [name for bit, name in THROTTLE_REASONS.items() if bits & bit]


def nvml_handle(nvml, device: torch.device):
    """The NVML handle of a torch CUDA device.

    torch numbers devices after CUDA_VISIBLE_DEVICES (and, by default, fastest first); NVML numbers
    every GPU in PCI order. The PCI bus id names the same card in both.
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    if getattr(props, "pci_bus_id", None) is not None:
        domain = getattr(props, "pci_domain_id", 0) or 0
        bus_id = f"{domain:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        return nvml.nvmlDeviceGetHandleByPciBusId(bus_id)
    # an older torch: CUDA_VISIBLE_DEVICES, where set, names the card (an NVML index or a UUID)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    visible = [v for v in visible if v]
    if not visible:
        return nvml.nvmlDeviceGetHandleByIndex(index)
    if index >= len(visible):
        raise ValueError(f"cuda:{index} is not in CUDA_VISIBLE_DEVICES={','.join(visible)}")
    entry = visible[index]
    if entry.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(entry))
    return nvml.nvmlDeviceGetHandleByUUID(entry)


class _NvmlRegion:
    """Counter, power and clock-event reasons of one card, sampled in a background thread."""

    def __init__(self, nvml, handle, sample_s: float) -> None:
        self.nvml, self.handle, self.sample_s = nvml, handle, sample_s
        self.energy_mj: list[tuple[float, int]] = []
        self.power_mw: list[tuple[float, int]] = []
        self.reasons: int | None = None
        self._reason_fns = [getattr(nvml, n) for n in _REASON_FUNCTIONS if hasattr(nvml, n)]
        self._counter = self._power = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resbench-power", daemon=True)

    def _read(self, fn, *args):
        try:
            return fn(self.handle, *args)
        except self.nvml.NVMLError:
            return None

    def _read_reasons(self) -> int | None:
        while self._reason_fns:
            try:
                return self._reason_fns[0](self.handle)
            except self.nvml.NVMLError:
                self._reason_fns.pop(0)  # not in this driver (or not supported): try the older one
        return None

    def _sample(self) -> float:
        t = time.perf_counter()
        if self._counter:
            mj = self._read(self.nvml.nvmlDeviceGetTotalEnergyConsumption)
            if mj is not None:
                self.energy_mj.append((t, mj))
        if self._power:
            mw = self._read(self.nvml.nvmlDeviceGetPowerUsage)
            if mw is not None:
                self.power_mw.append((t, mw))
        bits = self._read_reasons()
        if bits is not None:
            self.reasons = (self.reasons or 0) | bits
        return t

    def _run(self) -> None:
        while not self._stop.wait(self.sample_s):
            self._sample()

    def _clocks(self) -> tuple[int | None, int | None]:
        nvml = self.nvml
        temperature = self._read(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
        if temperature is None and hasattr(nvml, "nvmlDeviceGetTemperatureV"):  # its successor
            temperature = self._read(nvml.nvmlDeviceGetTemperatureV, nvml.NVML_TEMPERATURE_GPU)
        return self._read(nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM), temperature

    def start(self) -> None:
        self.clock_start, self.temp_start = self._clocks()
        self.t0 = self._sample()
        # the first read tells what this card supports; later failures are skipped samples
        self._counter, self._power = bool(self.energy_mj), bool(self.power_mw)
        self._thread.start()

    def stop(self) -> Reading:
        self._stop.set()
        self._thread.join()
        wall_s = self._sample() - self.t0
        clock_end, temp_end = self._clocks()
        with contextlib.suppress(self.nvml.NVMLError):
            self.nvml.nvmlShutdown()
        values = [mj for _, mj in self.energy_mj]
        steps = sum(b != a for a, b in itertools.pairwise(values))
        energy_j = None
        if steps >= MIN_COUNTER_STEPS or (steps and len(self.power_mw) < 2):
            method, energy_j = "nvml_energy_counter", (values[-1] - values[0]) / 1e3
        elif len(self.power_mw) >= 2:
            method = "nvml_power_sampled"
            pairs = itertools.pairwise(self.power_mw)  # trapezoids: mW x s = mJ
            energy_j = sum((pa + pb) / 2 * (tb - ta) for (ta, pa), (tb, pb) in pairs) / 1e3
        else:
            method = "NVML reports neither an energy counter nor power for this GPU"
        if energy_j is not None and energy_j <= 0:
            method, energy_j = f"{method} read no energy over a {wall_s:.3f} s region", None
        names = throttle_names(self.reasons) if self.reasons is not None else None
        return Reading(
            method=method,
            energy_j=energy_j,
            wall_s=wall_s,
            sm_clock_mhz_start=self.clock_start,
            sm_clock_mhz_end=clock_end,
            temperature_c_start=self.temp_start,
            temperature_c_end=temp_end,
            throttled=None if names is None else bool(names),
            throttle_reasons=", ".join(names) if names else None,
        )


def _open_nvml(device: torch.device, sample_s: float) -> _NvmlRegion | str:
    try:
        import pynvml as nvml
    except ImportError:
        return NO_PYNVML
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return f"NVML unavailable: {exc}"
    try:
        return _NvmlRegion(nvml, nvml_handle(nvml, device), sample_s)
    except (nvml.NVMLError, ValueError, RuntimeError) as exc:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
        return f"no NVML device for {device}: {exc}"


def rapl_packages(root: Path) -> list[Path] | str:
    """The RAPL package zones under ``root`` (one per socket), or why there are none."""
    if not root.is_dir():
        return f"no RAPL in {root}"
    zones: dict[str, Path] = {}
    # intel-rapl-mmio:N repeats intel-rapl:N's package on some Intel CPUs: the MSR zone wins
    for zone in sorted(root.iterdir(), key=lambda p: ("mmio" in p.name, p.name)):
        try:
            name = (zone / "name").read_text().strip()
        except OSError:  # the control-type folder (intel-rapl) has no name
            continue
        if name.startswith("package") and name not in zones and (zone / "energy_uj").exists():
            zones[name] = zone
    return list(zones.values()) or f"no RAPL package domain in {root}"


class _RaplRegion:
    """Package energy counters at the region's edges, wrap-around included."""

    def __init__(self, zones: list[Path]) -> None:
        self.zones = zones
        self.ranges = [int((z / "max_energy_range_uj").read_text()) for z in zones]

    def read(self) -> list[int]:
        return [int((z / "energy_uj").read_text()) for z in self.zones]

    def start(self) -> None:
        self.t0, self.start_uj = time.perf_counter(), self.read()

    def stop(self) -> Reading:
        end_uj, wall_s = self.read(), time.perf_counter() - self.t0
        # one wrap at most: at 300 W a typical 262 kJ range lasts ~15 minutes
        delta = [
            (b - a) % r if r else b - a
            for a, b, r in zip(self.start_uj, end_uj, self.ranges, strict=True)
        ]
        energy_j = sum(delta) / 1e6
        if energy_j <= 0:
            return Reading(f"RAPL counter did not advance over a {wall_s:.3f} s region")
        return Reading("rapl", energy_j=energy_j, wall_s=wall_s)


def _open_rapl(root: Path) -> _RaplRegion | str:
    zones = rapl_packages(root)
    if isinstance(zones, str):
        return zones
    try:
        region = _RaplRegion(zones)
        region.read()
    except OSError as exc:
        return (
            f"RAPL not readable: {exc.strerror or exc} ({exc.filename}); energy_uj is root-only "
            "since Linux 5.10 (run as root, or chmod a+r /sys/class/powercap/*/energy_uj)"
        )
    except ValueError as exc:
        return f"RAPL unreadable: {exc}"
    return region


class Meter:
    """Energy, clocks and throttling of ``device`` over a ``with`` block; never fails the block."""

    def __init__(
        self, device: torch.device | str, powercap: Path | None = None, sample_s: float = SAMPLE_S
    ) -> None:
        self.device = torch.device(device)
        self.powercap = powercap
        self.sample_s = sample_s
        self.reading: Reading | None = None

    def __enter__(self) -> Meter:
        self.reading = None
        if self.device.type == "cuda":
            self._region = _open_nvml(self.device, self.sample_s)
        elif self.device.type == "cpu":
            self._region = _open_rapl(self.powercap or RAPL_ROOT)
        else:
            self._region = f"no power reading on {self.device.type}"
        if not isinstance(self._region, str):
            self._region.start()
        return self

    def __exit__(self, *exc) -> None:
        region = self._region
        if isinstance(region, str):
            self.reading = Reading(region)
            return
        try:
            self.reading = region.stop()
        except (OSError, ValueError) as error:  # a RAPL file gone mid-region
            self.reading = Reading(f"power reading failed: {error}")

    def fields(self, images: int) -> dict:
        """The Result fields for ``images`` processed in the region (iterations x batch size)."""
        if self.reading is None:
            raise RuntimeError("Meter.fields() is for after the with block")
        return fields(self.reading, images)


def pool_forks(first, new, images: int) -> dict:
    """The energy fields of two processes' Results as one over ``images`` processed: energy and
    time add up, the clocks and temperatures run from ``first``'s start to ``new``'s end."""
    return fields(combine([_reading(first), _reading(new)]), images)


def _reading(r) -> Reading:
    """The energy reading a Result was made from, as far as its fields keep it."""
    wall = r.energy_j / r.avg_power_w if r.energy_j and r.avg_power_w else None
    return Reading(
        r.power_method or "none", r.energy_j, wall, r.sm_clock_mhz_start, r.sm_clock_mhz_end,
        r.temperature_c_start, r.temperature_c_end, r.throttled, r.throttle_reasons,
    )  # fmt: skip


def fields(r: Reading, images: int) -> dict:
    """The Result fields of a Reading over ``images`` processed (iterations x batch size)."""
    per_image = r.energy_j / images if r.energy_j and images > 0 else None
    return {
        "avg_power_w": r.energy_j / r.wall_s if r.energy_j and r.wall_s else None,
        "joules_per_image": per_image,
        "images_per_joule": 1 / per_image if per_image else None,
        "energy_j": r.energy_j,
        "power_method": r.method,
        "sm_clock_mhz_start": r.sm_clock_mhz_start,
        "sm_clock_mhz_end": r.sm_clock_mhz_end,
        "temperature_c_start": r.temperature_c_start,
        "temperature_c_end": r.temperature_c_end,
        "throttled": r.throttled,
        "throttle_reasons": r.throttle_reasons,
    }
