using Drydock.Runtime.Storage;
using Microsoft.Extensions.Logging;

namespace Drydock.Runtime.Hosting;

public sealed partial class GrainSilo
{
    private static partial class Log
    {
        [LoggerMessage(1, LogLevel.Information, "Silo {SiloId} started (role {Role}, host {HypervisorHost}, store {Provider})")]
        public static partial void Started(ILogger logger, string siloId, SiloRole role, string? hypervisorHost, string provider);

        [LoggerMessage(2, LogLevel.Information, "Silo {SiloId} stopped")]
        public static partial void Stopped(ILogger logger, string siloId);

        [LoggerMessage(3, LogLevel.Error, "Silo {SiloId} was declared dead by the cluster")]
        public static partial void DeclaredDead(ILogger logger, string siloId);

        [LoggerMessage(4, LogLevel.Warning, "Silo {DeadSiloId} missed its heartbeats and was declared dead by {SiloId}")]
        public static partial void DetectedDead(ILogger logger, string deadSiloId, string siloId);

        [LoggerMessage(5, LogLevel.Warning, "Store error during {Operation}; retrying")]
        public static partial void StoreError(ILogger logger, string operation, Exception exception);

        [LoggerMessage(6, LogLevel.Information, "Took over grain {Grain} from {PreviousOwner} at epoch {Epoch}")]
        public static partial void TookOver(ILogger logger, string grain, string previousOwner, long epoch);

        [LoggerMessage(7, LogLevel.Warning, "Turn of grain {Grain} failed and was rolled back")]
        public static partial void TurnFailed(ILogger logger, string grain, Exception exception);

        [LoggerMessage(8, LogLevel.Warning, "Turn of grain {Grain} at epoch {Epoch} was fenced: another silo owns it now")]
        public static partial void TurnFenced(ILogger logger, string grain, long epoch);

        [LoggerMessage(9, LogLevel.Error, "{Count} message(s) of grain {Grain} were dead-lettered")]
        public static partial void DeadLettered(ILogger logger, string grain, int count);

        [LoggerMessage(10, LogLevel.Debug, "Effect {EffectId} ({Type}) attempt {Attempt} started")]
        public static partial void EffectStarted(ILogger logger, string effectId, string type, int attempt);

        [LoggerMessage(11, LogLevel.Debug, "Effect {EffectId} attempt {Attempt}: {Outcome}")]
        public static partial void EffectFinished(ILogger logger, string effectId, string outcome, int attempt);

        [LoggerMessage(12, LogLevel.Warning, "Result of effect {EffectId} attempt {Attempt} was fenced: a newer attempt owns it")]
        public static partial void EffectFenced(ILogger logger, string effectId, int attempt);

        [LoggerMessage(13, LogLevel.Warning, "Lease of effect {EffectId} attempt {Attempt} was lost")]
        public static partial void EffectLeaseLost(ILogger logger, string effectId, int attempt);

        [LoggerMessage(14, LogLevel.Warning, "Silo {SiloId} could not leave the membership table cleanly")]
        public static partial void LeaveFailed(ILogger logger, string siloId, Exception exception);
    }
}
