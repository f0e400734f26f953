import pytest

from tests.aws.emulator import moto_server


@pytest.fixture(scope="module")
def moto():
    """A local EC2 API emulator of this test module's own (nothing leaks between modules)."""
    with moto_server() as url:
        yield url
