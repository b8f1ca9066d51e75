using Microsoft.Extensions.Logging;

namespace Drydock.Hypervisor.Qemu.Qmp;

public sealed partial class QmpClient
{
    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Debug, Message = "QMP connected to {Endpoint} (QEMU {Version})")]
        public static partial void Connected(ILogger logger, string endpoint, Version? version);

        [LoggerMessage(Level = LogLevel.Trace, Message = "QMP {Endpoint}: sent '{Command}' as {Id}")]
        public static partial void CommandSent(ILogger logger, string endpoint, string command, string id);

        [LoggerMessage(Level = LogLevel.Debug, Message = "QMP {Endpoint}: '{Command}' failed: {ErrorClass}: {Description}")]
        public static partial void CommandFailed(ILogger logger, string endpoint, string command, string errorClass, string description);

        [LoggerMessage(Level = LogLevel.Trace, Message = "QMP {Endpoint}: event {Event}")]
        public static partial void EventReceived(ILogger logger, string endpoint, string @event);

        [LoggerMessage(Level = LogLevel.Warning, Message = "QMP {Endpoint}: error without id (a line QEMU could not parse): {Description}")]
        public static partial void UnmatchedError(ILogger logger, string endpoint, string description);

        [LoggerMessage(Level = LogLevel.Information, Message = "QMP connection to {Endpoint} ended: {Reason}")]
        public static partial void ConnectionClosed(ILogger logger, string endpoint, string reason);
    }
}
