"""The MLflow "model from code" file of a logged psvit model (MLflow copies it into the model and runs it at
load time): no pickled Python object is stored, so loading needs no ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``."""

from mlflow.models import set_model

from psvit.export.pyfunc import PsvitModel

set_model(PsvitModel())
