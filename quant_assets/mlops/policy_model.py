"""The `selection-policy` pyfunc model, logged from code (MLflow's models-from-code).

MLflow copies this file into the model and runs it when the model is loaded; the policy
(the run's `optimization.json`: `Policy.to_dict()`, its hash and the previous weights the
run traded from) travels as the model's `model_config`. Loading needs quant-lakehouse
installed (the model's requirements say so). Never imported by the project itself.
"""

import mlflow
import pandas as pd
import polars as pl

from quant_assets.mlops.registry import policy_weights


class SelectionPolicy(mlflow.pyfunc.PythonModel):
    """predict(returns) -> weights: a dates x symbols frame of daily simple returns (a
    `date` column is optional) in, a (symbol, weight) frame out. A turnover-controlled
    policy trades from the previous weights its run recorded; `weights(returns, previous)`
    (through `unwrap_python_model()`) takes other holdings. With the feature store's term:
    predict({"returns": frame, "features": {symbol: rating}})."""

    def load_context(self, context):
        self.parameters = dict(context.model_config or {})

    def weights(self, returns, previous=None, features=None) -> pd.DataFrame:
        frame = returns if isinstance(returns, pl.DataFrame) else pl.from_pandas(pd.DataFrame(returns))
        return policy_weights(frame, self.parameters, previous, features).to_pandas()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        features = None
        if isinstance(model_input, dict) and "returns" in model_input:
            model_input, features = model_input["returns"], model_input.get("features")
        return self.weights(model_input, features=features)


mlflow.models.set_model(SelectionPolicy())
