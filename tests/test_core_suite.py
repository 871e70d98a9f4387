"""The shared core test-suite (hrmkit.testing) itself: it passes a plugin core with one call, and each check fails
with a message naming the core when the promise it tests is broken."""

import pytest
import torch

from hrmkit.cores import UniversalTransformer
from hrmkit.testing import CHECKS, CoreCase, check_core
from hrmkit.testing import checks as c


def test_check_core_runs_the_whole_contract_on_a_plugin_outside_pytest():
    check_core("gated_loop")  # the example plugin, by its entry-point name
    assert c.check_task_checkpoint in CHECKS and len(CHECKS) == 13


class WrongShape(UniversalTransformer):
    def output(self, state):
        return state["z"][:, :-1]


class SecretlyRandom(UniversalTransformer):
    def output(self, state):
        return state["z"] + torch.randn_like(state["z"])


class FakeSampler(UniversalTransformer):
    stochastic = True  # claims to sample but never does


class OverlongHorizon(UniversalTransformer):
    def grad_calls(self):
        return [True] * self.num_calls


class ForgetsReset(UniversalTransformer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scale = torch.nn.Parameter(torch.ones(self.hidden_size))

    def output(self, state):
        return state["z"] * self.scale


class IgnoresTargets(UniversalTransformer):
    uses_targets = True


class ReadsTargetsUndeclared(UniversalTransformer):
    def call(self, kind, k, i, x, state, ctx):
        new = super().call(kind, k, i, x, state, ctx)
        return new if ctx.targets is None else {"z": new["z"] + ctx.targets}


@pytest.mark.parametrize("core,check,message", [
    (WrongShape, c.check_forward_backward, "output shape"),
    (SecretlyRandom, c.check_reproducible, "two forwards on the same input differ"),
    (FakeSampler, c.check_sampling, "marked stochastic but two forwards gave the same output"),
    (OverlongHorizon, c.check_gradient_horizon, "grad_calls\\(\\) gives"),
    (ForgetsReset, c.check_meta_init, "reset_parameters\\(\\) left scale uninitialised"),
    (IgnoresTargets, c.check_targets_and_aux_losses, "never read the targets"),
    (ReadsTargetsUndeclared, c.check_targets_and_aux_losses, "does not declare uses_targets changed"),
    (UniversalTransformer, c.check_state_carries, "stateless core gave a different output"),
], ids=lambda v: getattr(v, "__name__", None))
def test_each_check_fails_on_the_core_that_breaks_it(core, check, message):
    carries = check is not c.check_state_carries  # the UT does carry state: claiming otherwise must fail
    with pytest.raises(AssertionError, match=message):
        check(CoreCase(core, carries_state=carries))


def test_unregistered_cores_fail_the_checkpoint_checks_with_a_hint():
    class Local(UniversalTransformer):
        pass

    with pytest.raises(AssertionError, match="not registered: checkpoints cannot rebuild it"):
        c.check_config_round_trip(CoreCase(Local))
    c.check_forward_backward(CoreCase(Local))  # everything else runs on an unregistered class


def test_core_case_reports_bad_input():
    with pytest.raises(KeyError, match="has no variant 'huge'"):
        CoreCase(UniversalTransformer, "huge").build()
    with pytest.raises(TypeError, match="registered core name or a RecursiveCore subclass"):
        CoreCase(int).build()
    assert str(CoreCase("hrm")) == "hrm" and str(CoreCase("hrm", "text-tiny")) == "hrm-text-tiny"
