using Microsoft.Extensions.Logging;

namespace Drydock.Nbd.Server;

public sealed partial class NbdServer
{
    [LoggerMessage(Level = LogLevel.Information, Message = "NBD server listening on {Endpoint}")]
    private static partial void LogListening(ILogger logger, string endpoint);

    [LoggerMessage(Level = LogLevel.Warning, Message = "NBD server refused a connection from {Peer}: {Reason}")]
    private static partial void LogRefused(ILogger logger, string peer, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "NBD server could not accept a connection on {Endpoint}")]
    private static partial void LogAcceptFailed(ILogger logger, string endpoint, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "NBD server stopped; {Connections} connection(s) were closed")]
    private static partial void LogStopped(ILogger logger, int connections);
}
