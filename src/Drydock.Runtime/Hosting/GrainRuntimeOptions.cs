using Drydock.Runtime.Storage;

namespace Drydock.Runtime.Hosting;

/// <summary>Options of one silo. Durations are measured on the store's clock where they are leases or due times.</summary>
public sealed class GrainRuntimeOptions
{
    /// <summary>This silo's id in the membership table. Default: <c>{machine}-{pid}-{8 hex}</c>, new per process.</summary>
    public string? SiloId { get; set; }

    /// <summary>What this silo runs. Default <see cref="SiloRole.Both"/> (the embedded mode).</summary>
    public SiloRole Role { get; set; } = SiloRole.Both;

    /// <summary>The hypervisor host whose effects this silo runs. Required for the worker role; default null.</summary>
    public string? HypervisorHost { get; set; }

    /// <summary>How long a claimed grain stays ours without a commit. Each turn extends it. Default 30 seconds.</summary>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Heartbeat and failure-detection period. Default 5 seconds.</summary>
    public TimeSpan HeartbeatInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>A silo whose last heartbeat is older than this is declared dead and its leases expired. Default 30 seconds.</summary>
    public TimeSpan SiloDeathTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Longest wait between two looks at the store when no notification arrives. Default 1 second.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Grains this silo runs at once (one turn at a time each). Default 32.</summary>
    public int MaxConcurrentGrains { get; set; } = 32;

    /// <summary>Messages of one grain handled in one transaction (each is still its own turn and version). Default 16.</summary>
    public int MaxMessagesPerTransaction { get; set; } = 16;

    /// <summary>Deliveries of a message whose handler throws, before it is dead-lettered. Default 3.</summary>
    public int MaxMessageAttempts { get; set; } = 3;

    /// <summary>Lease of a claimed effect; renewed every third of it while the executor runs. Default 60 seconds.</summary>
    public TimeSpan EffectLeaseDuration { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Effects this silo runs at once. Default 8.</summary>
    public int MaxConcurrentEffects { get; set; } = 8;

    /// <summary>Attempts of an effect when the request does not say. Default 5.</summary>
    public int EffectMaxAttempts { get; set; } = 5;

    /// <summary>Delay before a retryable effect failure is retried, times the attempt number. Default 5 seconds.</summary>
    public TimeSpan EffectRetryBackoff { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long idempotency keys are remembered. Default 7 days.</summary>
    public TimeSpan IdempotencyRetention { get; set; } = TimeSpan.FromDays(7);

    /// <summary>How long an unclaimed reply (its caller timed out) is kept. Default 1 hour.</summary>
    public TimeSpan ReplyRetention { get; set; } = TimeSpan.FromHours(1);

    /// <summary>Period of pruning and queue-depth sampling. Default 1 minute.</summary>
    public TimeSpan MaintenanceInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Delay after a store error before a loop tries again (times the consecutive failures, at most 10). Default 500 ms.</summary>
    public TimeSpan StoreRetryDelay { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// Stop every loop when the membership table says this silo was declared dead. Default true (a dead silo must not
    /// run effects). The fencing does not depend on it: a silo that keeps going is rejected by the store.
    /// </summary>
    public bool StopWhenDeclaredDead { get; set; } = true;

    /// <summary>How long <c>StopAsync</c> lets running turns and effects finish before cancelling them. Default 10 seconds.</summary>
    public TimeSpan ShutdownGracePeriod { get; set; } = TimeSpan.FromSeconds(10);

    internal void Validate()
    {
        if (Role.HasFlag(SiloRole.Worker) && string.IsNullOrEmpty(HypervisorHost))
        {
            throw new ArgumentException("A worker silo needs HypervisorHost.", nameof(HypervisorHost));
        }

        if (LeaseDuration <= TimeSpan.Zero || EffectLeaseDuration <= TimeSpan.Zero || PollInterval <= TimeSpan.Zero || HeartbeatInterval <= TimeSpan.Zero)
        {
            throw new ArgumentException("Durations must be positive.");
        }

        if (SiloDeathTimeout <= HeartbeatInterval)
        {
            throw new ArgumentException("SiloDeathTimeout must be longer than HeartbeatInterval.", nameof(SiloDeathTimeout));
        }

        if (MaxConcurrentGrains <= 0 || MaxMessagesPerTransaction <= 0 || MaxMessageAttempts <= 0 || MaxConcurrentEffects <= 0 || EffectMaxAttempts <= 0)
        {
            throw new ArgumentException("Counts must be positive.");
        }
    }
}
