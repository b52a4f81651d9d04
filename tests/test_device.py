"""The default device: a CUDA GPU this torch can run on, else Apple's MPS, else the CPU; bf16 refused
on GPUs without it. CUDA and MPS are faked, so the choice is tested on any machine."""

import pytest
import torch

from libcem import device
from libcem.errors import LibcemError


def fake(monkeypatch, cuda=False, capability=(7, 5), archs=("sm_75", "sm_80", "sm_90"), mps=False, bf16=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Tesla P100-PCIE-16GB")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


def test_arch_list_decides_which_gpus_run():
    archs = ["sm_75", "sm_80", "sm_86", "sm_90", "compute_90"]
    assert device.arch_supported(archs, 7, 5)  # T4
    assert device.arch_supported(archs, 8, 9)  # L4: sm_86 binaries run on 8.9
    assert device.arch_supported(archs, 12, 0)  # newer than every binary: the compute_90 PTX is compiled for it
    assert not device.arch_supported(archs, 6, 0)  # P100
    assert not device.arch_supported(["sm_75", "sm_80"], 9, 0)  # no PTX, no sm_9x
    assert device.arch_supported(["sm_90a"], 9, 0)


def test_default_device_order(monkeypatch):
    fake(monkeypatch, cuda=True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device.default_device() == torch.device("cuda", 1)
    fake(monkeypatch, cuda=False, mps=True)
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    assert device.default_device() == torch.device("mps")
    fake(monkeypatch, cuda=False, mps=False)
    assert device.default_device() == torch.device("cpu")


def test_unsupported_gpu_is_named_and_skipped(monkeypatch):
    fake(monkeypatch, cuda=True, capability=(6, 0))
    reason = device.cuda_unsupported()
    assert reason.startswith("the GPU Tesla P100-PCIE-16GB (compute capability 6.0) is not supported")
    assert not device.cuda_usable()
    with pytest.warns(UserWarning, match="compute capability 6.0.*using the CPU instead"):
        assert device.default_device() == torch.device("cpu")


def test_bf16_refused_without_native_support(monkeypatch):
    fake(monkeypatch, cuda=True, bf16=False)
    with pytest.raises(LibcemError, match="no native bf16.*use --precision fp16"):
        device.check_precision("bf16")
    device.check_precision("fp16")
    fake(monkeypatch, cuda=True, capability=(8, 0), bf16=True)
    device.check_precision("bf16")
