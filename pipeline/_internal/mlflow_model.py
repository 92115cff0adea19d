"""The MLflow pyfunc flavour of a rayline model, logged as "models from code".

MLflow stores this file, not a pickle: loading runs this code and reads the predictor's safe
files (JSON, UBJ, skops), so `mlflow.pyfunc.load_model` never unpickles anything from the store.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class RaylineModel(PythonModel):
    def load_context(self, context):
        from pipeline.predictor import ARTIFACT_NAME, Predictor

        self.predictor = Predictor.load(context.artifacts[ARTIFACT_NAME])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.predictor.predict_frame(frame)


mlflow.models.set_model(RaylineModel())
