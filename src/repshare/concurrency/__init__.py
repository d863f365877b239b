"""Concurrency score (Hadidi, Cao, Ryoo, Kim, IEEE EDGE 2023): random-graph architectures, their
networks, hypergraph partitioning with Mt-KaHyPar, and the score's metrics on any weighted DAG."""
