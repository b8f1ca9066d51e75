using System.Text.Json;

namespace Drydock.Hypervisor.Qemu.Qmp;

/// <summary>What a QMP server sent.</summary>
public enum QmpMessageKind
{
    /// <summary>The greeting, <c>{"QMP":{"version":…,"capabilities":[…]}}</c>.</summary>
    Greeting = 0,

    /// <summary>A successful reply, <c>{"return":…,"id":…}</c>.</summary>
    Return = 1,

    /// <summary>A failed command, <c>{"error":{"class":…,"desc":…},"id":…}</c>.</summary>
    Error = 2,

    /// <summary>An asynchronous event, <c>{"event":…,"data":…,"timestamp":{"seconds":…,"microseconds":…}}</c>.</summary>
    Event = 3,
}

/// <summary>One message from a QMP server, parsed by <see cref="QmpProtocol.Parse"/>.</summary>
public sealed record QmpMessage
{
    /// <summary>Its kind.</summary>
    public required QmpMessageKind Kind { get; init; }

    /// <summary>The command id echoed by a reply (<see cref="QmpMessageKind.Return"/>, <see cref="QmpMessageKind.Error"/>), if any.</summary>
    public string? Id { get; init; }

    /// <summary>
    /// The greeting's <c>QMP</c> member, a reply's <c>return</c> value, an event's <c>data</c> (an empty object when
    /// absent), or the error object.
    /// </summary>
    public JsonElement Payload { get; init; }

    /// <summary>An error's <c>class</c> (e.g. <c>GenericError</c>, <c>CommandNotFound</c>).</summary>
    public string? ErrorClass { get; init; }

    /// <summary>An error's <c>desc</c>: QEMU's message.</summary>
    public string? ErrorDescription { get; init; }

    /// <summary>An event's name (e.g. <c>BLOCK_EXPORT_DELETED</c>).</summary>
    public string? EventName { get; init; }

    /// <summary>An event's timestamp (QEMU's clock).</summary>
    public DateTimeOffset? Timestamp { get; init; }
}

/// <summary>An asynchronous QMP event.</summary>
/// <param name="Name">The event's name.</param>
/// <param name="Data">Its <c>data</c> member (an empty object when absent).</param>
/// <param name="Timestamp">QEMU's timestamp, if sent.</param>
public sealed record QmpEvent(string Name, JsonElement Data, DateTimeOffset? Timestamp)
{
    /// <summary>A string member of <see cref="Data"/>, or null.</summary>
    /// <param name="name">The member name.</param>
    /// <returns>Its value when it is a string.</returns>
    public string? DataString(string name) =>
        Data.ValueKind == JsonValueKind.Object && Data.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String
            ? value.GetString()
            : null;
}
