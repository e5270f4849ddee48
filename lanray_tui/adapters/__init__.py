"""One small module per outside system (Ray processes, Docker, scapy, NVML, psutil)."""
