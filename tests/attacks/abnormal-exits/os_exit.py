# attack: leaves with os._exit before returning
# stopped-by: no frame means no result
# expect: 422 sandbox-killed
import os


def main():
    os._exit(0)
