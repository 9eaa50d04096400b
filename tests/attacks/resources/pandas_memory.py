# attack: builds a DataFrame far over the memory limit with pandas
# stopped-by: the memory cgroup
# expect: 422 memory-limit
import numpy as np
import pandas as pd


def main():
    df = pd.DataFrame(np.random.rand(50_000_000, 8))
    return float(df.sum().sum())
