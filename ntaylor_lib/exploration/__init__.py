"""Exploration: activation configurations, the exploration metrics of Figure 5, signed
gradients (Observation 3), the line walk and clamping checks (Observations 1 and 2) and
shattered gradients (Figure 1)."""
