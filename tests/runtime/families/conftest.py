"""Fixtures of the family tests: the palmerpenguins table."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture(scope="session")
def penguins() -> pd.DataFrame:
    """palmerpenguins: string species/island/sex, NaNs, shuffled reproducibly."""
    from palmerpenguins import load_penguins

    return load_penguins().sample(frac=1.0, random_state=0).reset_index(drop=True)
