import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.181.1", 51658)); s.listen(100)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)  # accept, never send an SSH banner
