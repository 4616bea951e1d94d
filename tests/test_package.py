import heph


def test_version_is_a_string():
    assert heph.__version__.count(".") == 2
