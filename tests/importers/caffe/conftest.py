import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # caffe_netfiles.py, the shared helpers of these tests
