using Drydock.Nbd.Protocol;
using Microsoft.Extensions.Logging;

namespace Drydock.Nbd.Server;

internal sealed partial class NbdServerConnection
{
    [LoggerMessage(Level = LogLevel.Debug, Message = "NBD connection {Connection} opened from {Peer}")]
    private static partial void LogOpened(ILogger logger, long connection, string peer);

    [LoggerMessage(Level = LogLevel.Debug, Message = "NBD connection {Connection} entered transmission on export '{Export}' (TLS {Tls}, structured replies {Structured}, {Contexts} metadata context(s))")]
    private static partial void LogTransmission(ILogger logger, long connection, string export, bool tls, bool structured, int contexts);

    [LoggerMessage(Level = LogLevel.Debug, Message = "NBD connection {Connection} closed: {Reason}")]
    private static partial void LogClosed(ILogger logger, long connection, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "NBD connection {Connection} broke the protocol and was closed: {Reason}")]
    private static partial void LogClientViolation(ILogger logger, long connection, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "NBD connection {Connection}: the TLS handshake failed: {Reason}")]
    private static partial void LogTlsFailed(ILogger logger, long connection, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "NBD connection {Connection} did not finish its handshake within {Seconds} s and was closed")]
    private static partial void LogHandshakeTimeout(ILogger logger, long connection, double seconds);

    [LoggerMessage(Level = LogLevel.Error, Message = "NBD connection {Connection} failed")]
    private static partial void LogFailed(ILogger logger, long connection, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "NBD connection {Connection}: {Command} at offset {Offset} failed in the backend")]
    private static partial void LogBackendFailed(ILogger logger, long connection, string command, ulong offset, Exception exception);

    [LoggerMessage(Level = LogLevel.Error, Message = "NBD connection {Connection}: answering {Command} at offset {Offset} failed; closing the connection")]
    private static partial void LogRequestFailed(ILogger logger, long connection, string command, ulong offset, Exception exception);

    [LoggerMessage(Level = LogLevel.Debug, Message = "NBD connection {Connection}: injected handshake fault {Fault}")]
    private static partial void LogHandshakeFault(ILogger logger, long connection, NbdHandshakeFault fault);

    [LoggerMessage(Level = LogLevel.Debug, Message = "NBD connection {Connection}: injected {Fault} into {Command} [{Offset}, +{Length})")]
    private static partial void LogRequestFault(ILogger logger, long connection, NbdReplyFault fault, NbdCommand command, ulong offset, uint length);
}
