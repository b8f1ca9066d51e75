namespace Drydock.Hypervisor;

/// <summary>What happened to a domain.</summary>
public enum DomainEventKind
{
    /// <summary>A domain was defined (appeared on the host).</summary>
    Defined = 1,

    /// <summary>A domain was undefined (removed from the host).</summary>
    Undefined = 2,

    /// <summary>A domain started (running or paused).</summary>
    Started = 3,

    /// <summary>A domain was paused.</summary>
    Paused = 4,

    /// <summary>A paused domain resumed.</summary>
    Resumed = 5,

    /// <summary>A domain stopped normally (shutdown, destroy).</summary>
    Stopped = 6,

    /// <summary>A domain stopped abnormally (process killed, crash).</summary>
    Crashed = 7,

    /// <summary>A domain migrated; <see cref="DomainEvent.Detail"/> names the other host where known.</summary>
    Migrated = 8,

    /// <summary>A disk was added, removed, replaced or resized (<see cref="DomainEvent.Target"/>).</summary>
    DiskChanged = 9,

    /// <summary>A disk's content went back in time (snapshot revert, storage rollback; F13).</summary>
    Reverted = 10,

    /// <summary>A capture can no longer be read (its snapshot broke, e.g. fleece space ran out; F17).</summary>
    CaptureBroken = 11,

    /// <summary>The subscriber fell behind and events were dropped: re-read the state of every domain.</summary>
    EventsLost = 12,
}

/// <summary>A lifecycle event (<see cref="IHypervisorDriver.WatchEventsAsync"/>).</summary>
/// <param name="DomainId">The domain (empty for <see cref="DomainEventKind.EventsLost"/>).</param>
/// <param name="Kind">What happened.</param>
/// <param name="Timestamp">When the driver saw it.</param>
public sealed record DomainEvent(string DomainId, DomainEventKind Kind, DateTimeOffset Timestamp)
{
    /// <summary>The host that reported it.</summary>
    public string? HostName { get; init; }

    /// <summary>The disk concerned, for disk events.</summary>
    public string? Target { get; init; }

    /// <summary>The capture concerned, for <see cref="DomainEventKind.CaptureBroken"/>.</summary>
    public string? CaptureId { get; init; }

    /// <summary>More, in the hypervisor's words (a reason, the other host of a migration).</summary>
    public string? Detail { get; init; }
}
