using System.Text.Json;

namespace Drydock.Runtime;

/// <summary>
/// Sent by the runtime to the grain that asked for an effect, once the worker of the effect's host ran it
/// to completion and its result was accepted (the worker still held the effect's lease).
/// Delivered exactly once per effect id.
/// </summary>
/// <param name="EffectId">The id of the effect (see <see cref="EffectRequest.EffectId"/>).</param>
/// <param name="EffectType">The stable type name of the effect payload.</param>
/// <param name="Attempt">The attempt that completed (1 for the first).</param>
/// <param name="Result">The executor's result as JSON, if it returned one.</param>
public sealed record EffectCompleted(string EffectId, string EffectType, int Attempt, JsonElement? Result) : IGrainMessage
{
    /// <inheritdoc/>
    public static string TypeName => "drydock.runtime.effect-completed";

    /// <inheritdoc/>
    public static int TypeVersion => 1;
}

/// <summary>
/// Sent by the runtime to the grain that asked for an effect when the effect failed permanently or ran out
/// of attempts. Delivered exactly once per effect id, and never together with <see cref="EffectCompleted"/>.
/// </summary>
/// <param name="EffectId">The id of the effect.</param>
/// <param name="EffectType">The stable type name of the effect payload.</param>
/// <param name="Attempts">How many attempts were made.</param>
/// <param name="Error">The last error, as reported by the executor.</param>
public sealed record EffectFailed(string EffectId, string EffectType, int Attempts, string Error) : IGrainMessage
{
    /// <inheritdoc/>
    public static string TypeName => "drydock.runtime.effect-failed";

    /// <inheritdoc/>
    public static int TypeVersion => 1;
}
