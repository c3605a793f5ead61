"""For responders and owners: replay, least privilege, policy simulation, agents."""
