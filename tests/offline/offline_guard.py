"""Refuse network connections to anything but loopback (gloo DDP on CPU talks over 127.0.0.1)."""
import ipaddress
import socket

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex
_installed = []


class NetworkAccessError(RuntimeError):
    pass


def _is_local(address):
    if not isinstance(address, tuple):  # AF_UNIX path
        return True
    host = address[0]
    if host in ('localhost', ''):
        return True
    try:
        return ipaddress.ip_address(host.split('%')[0]).is_loopback
    except ValueError:
        return False


def _guard(original):

    def connect(self, address):
        if not _is_local(address):
            raise NetworkAccessError(f'The test suite is offline: connection to {address!r} refused.')
        return original(self, address)

    return connect


def install():
    if not _installed:
        socket.socket.connect = _guard(_original_connect)
        socket.socket.connect_ex = _guard(_original_connect_ex)
        _installed.append(True)


def uninstall():
    if _installed:
        socket.socket.connect = _original_connect
        socket.socket.connect_ex = _original_connect_ex
        _installed.clear()
