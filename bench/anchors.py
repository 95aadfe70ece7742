"""The anchors, one run each: `python anchors.py TOOL DATA.parquet [THREADS] [tree|forest]`.

Each tool does the reference pipeline from the file: read it, drop rows without delays,
Route = Origin-Dest, label = ArrDelay bucketed at -15/0/30, frequency-ordered indexes of
Carrier, Origin, Dest, Route, a seeded 80/20 split; trains one depth-5 tree (32 bins where the
tool bins), or with `forest` a random forest of 20 depth-5 trees (sqrt of the features at each
node, bootstrap), on DepDelay, Distance, DayOfMonth, DayOfWeek, DayOfYear and the four indexes;
and scores the test split. Prints one JSON line: train_seconds (the training call only, binning
included for LightGBM and XGBoost), prepare_seconds (the file to the split numpy arrays, imports
excluded), e2e_seconds (process start to metrics), accuracy and Spark-style weighted precision /
recall / F1.

Tools: sklearn, lightgbm, xgboost (pandas preparation), lightgbm-polars (the same LightGBM
training on a Polars lazy preparation with POLARS_MAX_THREADS = THREADS; the same rows, features,
indexes and split as the pandas preparation, so the same metrics), spark.
"""
import json
import os
import sys
import time

START = time.perf_counter()

FEATURES = ["DepDelay", "Distance", "DayOfMonth", "DayOfWeek", "DayOfYear",
            "Carrier_index", "Origin_index", "Dest_index", "Route_index"]
COLUMNS = ["ArrDelay", "DepDelay", "Distance", "DayOfMonth", "DayOfWeek", "DayOfYear", "Carrier", "Origin", "Dest"]
CATEGORIES = ["Carrier", "Origin", "Dest", "Route"]


def weighted_metrics(y_true, y_pred):
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="weighted", zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "weighted_precision": float(p),
            "weighted_recall": float(r), "weighted_f1": float(f)}


def prepare(path):
    """The pandas preparation: (X, y, X_test, y_test, seconds from the file to these arrays)."""
    import numpy as np
    import pandas as pd
    t = time.perf_counter()
    df = pd.read_parquet(path, columns=COLUMNS).dropna(subset=["ArrDelay", "DepDelay"])
    df["Route"] = df["Origin"] + "-" + df["Dest"]
    for c in CATEGORIES:
        counts = df[c].value_counts()
        order = sorted(counts.index, key=lambda v: (-counts[v], v))
        df[c + "_index"] = df[c].map({v: i for i, v in enumerate(order)}).astype("float64")
    y = np.digitize(df["ArrDelay"].to_numpy(), [-15.0, 0.0, 30.0]).astype("int32")
    X = df[FEATURES].to_numpy(dtype="float64")
    return split(X, y) + (time.perf_counter() - t,)


def prepare_polars(path, threads):
    """The same preparation with Polars: one lazy query from the Parquet scan to the feature and
    label columns, then the same numpy split. The rows keep file order (the split depends on it);
    each index is the rank of a value by count descending, then value ascending (byte order, which
    is Python's string order), as in `prepare`; nulls get no index (NaN), as there."""
    # Polars sizes its thread pool when it is imported.
    os.environ["POLARS_MAX_THREADS"] = str(threads)
    import numpy  # noqa: F401 (imported before the clock starts, as in `prepare`)
    import polars as pl
    t = time.perf_counter()
    kept = [pl.col(c).is_not_null() & pl.col(c).is_not_nan() for c in ("ArrDelay", "DepDelay")]
    base = (pl.scan_parquet(path).select(COLUMNS).filter(*kept)
            .with_columns(Route=pl.concat_str([pl.col("Origin"), pl.lit("-"), pl.col("Dest")])))
    lf = base
    for c in CATEGORIES:
        index = (base.group_by(c).len().drop_nulls(c)
                 .sort(["len", c], descending=[True, False])
                 .with_row_index(c + "_index")
                 .select(c, pl.col(c + "_index").cast(pl.Float64)))
        lf = lf.join(index, on=c, how="left", maintain_order="left")
    arr = pl.col("ArrDelay")
    # np.digitize(ArrDelay, [-15, 0, 30]): the number of edges at or below the value.
    label = ((arr >= -15.0).cast(pl.Int32) + (arr >= 0.0).cast(pl.Int32) + (arr >= 30.0).cast(pl.Int32)).alias("label")
    df = lf.select([pl.col(f).cast(pl.Float64) for f in FEATURES] + [label]).collect()
    X = df.select(FEATURES).to_numpy()
    y = df["label"].to_numpy()
    del df
    return split(X, y) + (time.perf_counter() - t,)


def split(X, y):
    """The seeded 80/20 split of every Python tool: (X, y, X_test, y_test)."""
    import numpy as np
    rng = np.random.default_rng(42)
    test = rng.random(len(y)) < 0.2
    return X[~test], y[~test], X[test], y[test]


# The forest of `bench/compare --mode forest`: Spark's RandomForestClassifier defaults but 20
# trees of depth 5.
TREES = 20


def main():
    tool, path = sys.argv[1], sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    forest = len(sys.argv) > 4 and sys.argv[4] == "forest"
    if tool == "spark":
        return spark(path, threads, forest)
    if tool == "lightgbm-polars":
        X, y, Xt, yt, prep = prepare_polars(path, threads)
        learner = "lightgbm"
    else:
        X, y, Xt, yt, prep = prepare(path)
        learner = tool
    if forest:
        train, pred = train_forest(learner, threads, X, y, Xt)
    elif learner == "sklearn":
        from sklearn.tree import DecisionTreeClassifier
        model = DecisionTreeClassifier(max_depth=5, random_state=42)
        t = time.perf_counter()
        model.fit(X, y)
        train = time.perf_counter() - t
        pred = model.predict(Xt)
    elif learner == "lightgbm":
        import lightgbm as lgb
        params = {"objective": "multiclass", "num_class": 4, "max_depth": 5, "num_leaves": 32, "max_bin": 32,
                  "learning_rate": 1.0, "min_data_in_leaf": 1, "min_sum_hessian_in_leaf": 0.0,
                  "num_threads": threads, "verbose": -1, "seed": 42, "deterministic": True}
        t = time.perf_counter()
        booster = lgb.train(params, lgb.Dataset(X, y, params={"max_bin": 32, "verbose": -1}), num_boost_round=1)
        train = time.perf_counter() - t
        pred = booster.predict(Xt).argmax(axis=1)
    elif learner == "xgboost":
        import xgboost as xgb
        params = {"tree_method": "hist", "max_depth": 5, "max_bin": 32, "objective": "multi:softmax",
                  "num_class": 4, "eta": 1.0, "nthread": threads, "seed": 42}
        t = time.perf_counter()
        booster = xgb.train(params, xgb.DMatrix(X, label=y, nthread=threads), num_boost_round=1)
        train = time.perf_counter() - t
        pred = booster.predict(xgb.DMatrix(Xt, nthread=threads)).astype("int32")
    else:
        raise SystemExit(f"unknown tool {tool}")
    out = {"tool": tool, "train_seconds": train, "prepare_seconds": prep, "e2e_seconds": time.perf_counter() - START}
    out.update(weighted_metrics(yt, pred))
    print(json.dumps(out))


def train_forest(tool, threads, X, y, Xt):
    """Returns (training seconds, test predictions) of the tool's random forest."""
    if tool == "sklearn":
        from sklearn.ensemble import RandomForestClassifier
        model = RandomForestClassifier(n_estimators=TREES, max_depth=5, max_features="sqrt", bootstrap=True,
                                       n_jobs=threads, random_state=42)
        t = time.perf_counter()
        model.fit(X, y)
        return time.perf_counter() - t, model.predict(Xt)
    if tool == "lightgbm":
        import lightgbm as lgb
        # LightGBM's random forest: bagging 0.632 (a bootstrap's share of distinct rows) and
        # sqrt(9) = 3 of 9 features per node.
        params = {"boosting": "rf", "objective": "multiclass", "num_class": 4, "max_depth": 5, "num_leaves": 32,
                  "max_bin": 32, "bagging_fraction": 0.632, "bagging_freq": 1, "feature_fraction_bynode": 3 / 9,
                  "min_data_in_leaf": 1, "min_sum_hessian_in_leaf": 0.0, "num_threads": threads, "verbose": -1,
                  "seed": 42, "deterministic": True}
        t = time.perf_counter()
        booster = lgb.train(params, lgb.Dataset(X, y, params={"max_bin": 32, "verbose": -1}), num_boost_round=TREES)
        return time.perf_counter() - t, booster.predict(Xt).argmax(axis=1)
    raise SystemExit(f"no forest for {tool}")


def spark(path, threads, forest=False):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import DecisionTreeClassifier, RandomForestClassifier
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import Bucketizer, StringIndexer, VectorAssembler
    from pyspark.sql import SparkSession, functions as F
    spark = (SparkSession.builder.master(f"local[{threads}]").config("spark.driver.memory", "8g")
             .config("spark.ui.enabled", "false").getOrCreate())
    df = spark.read.parquet(path).dropna(subset=["ArrDelay", "DepDelay"])
    df = df.withColumn("Route", F.concat(F.col("Origin"), F.lit("-"), F.col("Dest")))
    df = Bucketizer(splits=[-float("inf"), -15.0, 0.0, 30.0, float("inf")], inputCol="ArrDelay", outputCol="label").transform(df)
    for c in ["Carrier", "Origin", "Dest", "Route"]:
        df = StringIndexer(inputCol=c, outputCol=c + "_nominal", stringOrderType="frequencyDesc").fit(df).transform(df)
        # Arithmetic drops the nominal metadata: the indexes are ordered values, as elsewhere
        # (Route has hundreds of values, more than maxBins allows for a categorical feature).
        df = df.withColumn(c + "_index", F.col(c + "_nominal") + F.lit(0.0))
    assembler = VectorAssembler(inputCols=FEATURES, outputCol="features")
    data = assembler.transform(df).select("features", "label")
    train_df, test_df = data.randomSplit([0.8, 0.2], seed=42)
    train_df = train_df.cache()
    train_df.count()
    t = time.perf_counter()
    if forest:
        model = RandomForestClassifier(numTrees=TREES, maxDepth=5, maxBins=32, seed=42).fit(train_df)
    else:
        model = DecisionTreeClassifier(maxDepth=5, maxBins=32, seed=42).fit(train_df)
    train = time.perf_counter() - t
    pred = model.transform(test_df)
    metric = lambda name: MulticlassClassificationEvaluator(metricName=name).evaluate(pred)
    out = {"tool": f"spark-local[{threads}]", "train_seconds": train,
           "accuracy": metric("accuracy"), "weighted_precision": metric("weightedPrecision"),
           "weighted_recall": metric("weightedRecall"), "weighted_f1": metric("f1")}
    out["e2e_seconds"] = time.perf_counter() - START
    print(json.dumps(out))
    spark.stop()


if __name__ == "__main__":
    main()
