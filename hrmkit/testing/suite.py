"""CoreContract: the shared core test-suite as a pytest base class.

A plugin (or built-in) core runs every contract check with one import and one subclass::

    from hrmkit.testing import CoreCase, CoreContract

    class TestMyCore(CoreContract):
        case = CoreCase("my_core")                # registered name (or the class), "tiny" variant by default

To run several cores through the same tests, override the ``core_case`` fixture with ``params``.
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from hrmkit.testing import checks
from hrmkit.testing.case import CoreCase


class CoreContract:
    """Base class of the contract tests; pytest collects the subclasses (name them ``Test...``)."""

    case: ClassVar[CoreCase]

    @pytest.fixture
    def core_case(self) -> CoreCase:
        case = getattr(self, "case", None)
        if not isinstance(case, CoreCase):
            raise TypeError(f"{type(self).__name__} must set `case = CoreCase(...)` or override the core_case "
                            "fixture")
        return case

    def test_variants(self, core_case: CoreCase) -> None:
        checks.check_variants(core_case)

    def test_forward_backward(self, core_case: CoreCase) -> None:
        checks.check_forward_backward(core_case)

    def test_reproducible(self, core_case: CoreCase) -> None:
        checks.check_reproducible(core_case)

    def test_sampling(self, core_case: CoreCase) -> None:
        checks.check_sampling(core_case)

    def test_state_carries(self, core_case: CoreCase) -> None:
        checks.check_state_carries(core_case)

    def test_gradient_horizon(self, core_case: CoreCase) -> None:
        checks.check_gradient_horizon(core_case)

    def test_telemetry(self, core_case: CoreCase) -> None:
        checks.check_telemetry(core_case)

    def test_kv_cache_decoding(self, core_case: CoreCase) -> None:
        checks.check_kv_cache_decoding(core_case)

    def test_config_round_trip(self, core_case: CoreCase) -> None:
        checks.check_config_round_trip(core_case)

    def test_meta_init(self, core_case: CoreCase) -> None:
        checks.check_meta_init(core_case)

    def test_compute_dtype(self, core_case: CoreCase) -> None:
        checks.check_compute_dtype(core_case)

    def test_targets_and_aux_losses(self, core_case: CoreCase) -> None:
        checks.check_targets_and_aux_losses(core_case)

    def test_task_checkpoint(self, core_case: CoreCase, tmp_path) -> None:
        checks.check_task_checkpoint(core_case, tmp_path)
