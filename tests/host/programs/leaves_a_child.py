"""A main process that ends at SIGTERM and leaves a child behind that does not notice."""

import subprocess
import sys
import time

subprocess.Popen([sys.executable, "-c", "import time; print('child up', flush=True); time.sleep(600)"])
print("main up", flush=True)
time.sleep(600)
