"""The `selection-policy` pyfunc model, logged from code (MLflow's models-from-code).

MLflow copies this file into the model and runs it when the model is loaded; the policy
parameters travel as the model's `model_config`. Loading needs quant-lakehouse installed
(the model's requirements say so). Never imported by the project itself.
"""

import mlflow
import pandas as pd
import polars as pl

from quant_assets.mlops.registry import policy_weights


class SelectionPolicy(mlflow.pyfunc.PythonModel):
    """predict(returns) -> weights: a dates x symbols frame of daily simple returns (a
    `date` column is optional) in, a (symbol, weight) frame out. With the feature store's
    term: predict({"returns": frame, "features": {symbol: rating}})."""

    def load_context(self, context):
        self.parameters = dict(context.model_config or {})

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        features = None
        if isinstance(model_input, dict) and "returns" in model_input:
            model_input, features = model_input["returns"], model_input.get("features")
        returns = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(pd.DataFrame(model_input))
        return policy_weights(returns, self.parameters, features).to_pandas()


mlflow.models.set_model(SelectionPolicy())
