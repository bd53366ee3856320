"""Forecasting: inputs, training, baselines and masked metrics for the ConvLSTM forecaster.

Modules (imported explicitly; this package imports nothing, so ``traffic.forecast.result``
stays light for the registry and the DAGs):

* ``features``  -- ``build_inputs(grid, t_end, context_steps, horizon)``: the model's only input builder.
* ``train``     -- ``train_forecaster``, ``evaluate_module``, ``forecast``, ``holdout_indices``,
  ``make_split``, ``TrainingDiverged``.
* ``baselines`` -- persistence, seasonal average, Ridge and gradient boosting on lags; ``evaluate_baselines``.
* ``metrics``   -- ``masked_metrics`` (MAE, RMSE, MAPE with its zero-denominator rule), ``MetricAccumulator``,
  ``masked_mse``.
* ``checkpoint`` -- atomic training checkpoints, loaded with ``torch.load(weights_only=True)``.
* ``distributed`` -- DDP under ``torchrun`` (gloo on CPU, nccl on CUDA) and its command-line entry point.
* ``result``    -- ``TrainResult``, ``HorizonMetrics``, ``Holdout`` (the contract with the registry).

The network itself is ``traffic.model.Forecaster``.
"""
