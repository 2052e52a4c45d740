"""The method taxonomy: schema (pydantic), registry (data/methods.yaml) and graph (networkx). No torch."""
