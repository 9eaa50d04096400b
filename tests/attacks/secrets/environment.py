# attack: reads the whole environment, looking for the gateway's variables,
#   keys and tokens
# stopped-by: the jail's environment is built from scratch (nsjail --env only)
# expect: 200
# result: {"unexpected": []}
# forbid: CARGO_
# forbid: RUST
# forbid: /root
import os

ALLOWED = {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
           "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "MPLCONFIGDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}


def main():
    print(dict(os.environ))
    return {"unexpected": sorted(set(os.environ) - ALLOWED)}
