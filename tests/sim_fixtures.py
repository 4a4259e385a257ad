"""Shared marks of the tests that build OGBench environments."""

import pytest

# Building the manipspace envs warns about float64 bounds cast to float32 (gymnasium) and a
# missing X display (glfw, imported for rendering); neither matters here.
OGBENCH_WARNINGS = [
    pytest.mark.filterwarnings("ignore:.*precision lowered by casting:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*DISPLAY environment variable"),
]
