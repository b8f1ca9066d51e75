namespace Drydock.Runtime.Hosting;

/// <summary>
/// Runs one kind of effect on a worker silo (a libvirt call, an NBD transfer). Runs outside any transaction and
/// may run more than once for one effect id (a lease can expire), so it must be idempotent by
/// <see cref="EffectContext.EffectId"/>; only one run's result is ever accepted.
/// </summary>
public interface IEffectExecutor
{
    /// <summary>The stable type name of the payloads it runs.</summary>
    string EffectType { get; }

    /// <summary>Runs the effect. Throwing counts as a retryable failure. Cancellation means the lease was lost or the silo stops.</summary>
    Task<EffectOutcome> ExecuteAsync(EffectContext context, CancellationToken cancellationToken = default);
}

/// <summary>What an executor gets.</summary>
/// <param name="EffectId">Stable id: the idempotency key of the effect.</param>
/// <param name="Grain">The grain that asked for it and gets the result.</param>
/// <param name="Host">The hypervisor host.</param>
/// <param name="Attempt">1 for the first attempt.</param>
/// <param name="Payload">The deserialized payload record.</param>
public sealed record EffectContext(string EffectId, GrainId Grain, string Host, int Attempt, object Payload);

/// <summary>How an effect attempt ended.</summary>
public abstract record EffectOutcome
{
    private EffectOutcome()
    {
    }

    /// <summary>Done; <paramref name="result"/> (a registered record, or null) goes to the grain in <see cref="EffectCompleted"/>.</summary>
    public static EffectOutcome Success(object? result = null) => new Completed(result);

    /// <summary>Failed, worth another attempt after the backoff (while attempts remain).</summary>
    public static EffectOutcome Retry(string error) => new Failed(error, Retryable: true);

    /// <summary>Failed for good: the grain gets <see cref="EffectFailed"/> now.</summary>
    public static EffectOutcome Fail(string error) => new Failed(error, Retryable: false);

    /// <summary>Success.</summary>
    public sealed record Completed(object? Result) : EffectOutcome;

    /// <summary>Failure.</summary>
    public sealed record Failed(string Error, bool Retryable) : EffectOutcome;
}
