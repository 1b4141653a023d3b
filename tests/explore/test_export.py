"""CSV output (Arrow's writer, pandas for what Arrow cannot write): values read back as written."""
import numpy as np
import pandas as pd

from dse.explore.export import write_csv


def test_csv_round_trips_numbers_strings_booleans_and_missing(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=50) * 10.0 ** rng.integers(-30, 30, 50), "n": np.arange(50),
                       "f32": rng.random(50).astype(np.float32), "ok": rng.random(50) > 0.5,
                       "s": ["a,b", 'q"', "plain", "", "x"] * 10})
    df.loc[3, "x"] = np.nan
    df.loc[4, "x"] = np.inf
    write_csv(tmp_path / "t.csv", df)
    back = pd.read_csv(tmp_path / "t.csv", keep_default_na=False, na_values=[""])
    np.testing.assert_array_equal(back["x"].to_numpy(), df["x"].to_numpy())  # shortest round-trip repr, NaN, inf
    np.testing.assert_array_equal(back["n"].to_numpy(), df["n"].to_numpy())
    np.testing.assert_array_equal(back["f32"].to_numpy(np.float32), df["f32"].to_numpy())
    assert back["ok"].tolist() == df["ok"].tolist()
    assert back["s"].fillna("").tolist() == df["s"].tolist()


def test_csv_of_a_frame_arrow_cannot_write_goes_through_pandas(tmp_path):
    df = pd.DataFrame({"a": [[1, 2], [3]], "b": [1, "x"]})
    write_csv(tmp_path / "t.csv", df)
    assert open(tmp_path / "t.csv").read() == df.to_csv(index=False)
