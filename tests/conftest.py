"""Test session set-up: compiled kernels persist in a fresh directory of this session (shared
with the processes its tests start), never in the user's own kernel cache."""

import atexit
import os
import shutil
import tempfile

os.environ["GDN_XPU_CACHE_DIR"] = tempfile.mkdtemp(prefix="gdn_xpu_test_cache_")
atexit.register(shutil.rmtree, os.environ["GDN_XPU_CACHE_DIR"], ignore_errors=True)
