"""Kept for importers outside the core: ``attach`` lives in pdp/core/attach.py, ``Pruner`` in
pdp/methods/pdp/driver.py."""
from pdp_gpt2.pdp.core.attach import (MaskDriver, attach, check_fit, driver_class,  # noqa: F401
                                      global_budgets, method_description, method_record, sparsity_report)
from pdp_gpt2.pdp.methods.pdp.driver import Pruner  # noqa: F401
