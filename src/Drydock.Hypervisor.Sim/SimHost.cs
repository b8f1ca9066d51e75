using Drydock.Nbd;
using Drydock.Nbd.Server;

namespace Drydock.Hypervisor.Sim;

/// <summary>What a simulated domain looks like when defined.</summary>
public sealed class SimDomainSpec
{
    /// <summary>The name, unique on the host.</summary>
    public required string Name { get; init; }

    /// <summary>A fixed UUID, or null for one from the fleet's seeded generator.</summary>
    public Guid? Id { get; init; }

    /// <summary>The disks.</summary>
    public IList<SimDiskSpec> Disks { get; } = [];
}

/// <summary>One disk of a <see cref="SimDomainSpec"/>.</summary>
/// <param name="Target">Target name (letters, digits, '-', '_', '.').</param>
/// <param name="Size">Size in bytes (a multiple of 512).</param>
/// <param name="Format"><c>qcow2</c> (checkpoints) or <c>raw</c> (none).</param>
public sealed record SimDiskSpec(string Target, ulong Size, string Format = DiskFormats.Qcow2);

/// <summary>
/// A simulated hypervisor host: its domains, one NBD server on a Unix socket, its events, and the fleece space a
/// capture may use (<see cref="FleeceLimit"/>).
/// </summary>
public sealed class SimHost : IAsyncDisposable
{
    private readonly List<SimDomain> _domains = [];

    internal SimHost(SimFleet fleet, string name, NbdServer server, string socketPath)
    {
        Fleet = fleet;
        Name = name;
        Server = server;
        SocketPath = socketPath;
        Events = new DomainEventBroadcaster(fleet.Options.TimeProvider, name);
    }

    /// <summary>The fleet.</summary>
    public SimFleet Fleet { get; }

    /// <summary>The host name.</summary>
    public string Name { get; }

    /// <summary>The NBD server's Unix socket.</summary>
    public string SocketPath { get; }

    /// <summary>Bytes of old data one capture may keep before its snapshot breaks (F17). Default: unlimited.</summary>
    public long FleeceLimit { get; set; } = long.MaxValue;

    /// <summary>The domains on this host now.</summary>
    public IReadOnlyList<SimDomain> Domains
    {
        get
        {
            lock (_domains)
            {
                return [.. _domains];
            }
        }
    }

    /// <summary>The names of the exports the host's NBD server serves now.</summary>
    public IReadOnlyList<string> ExportNames => [.. Server.Exports.Select(e => e.Name)];

    internal NbdServer Server { get; }

    internal DomainEventBroadcaster Events { get; }

    /// <summary>Serialises control operations on this host's domains.</summary>
    internal SemaphoreSlim Lock { get; } = new(1, 1);

    /// <summary>A driver connected to this host (each call a new connection, as a new process would have).</summary>
    /// <returns>The driver.</returns>
    public SimDriver Connect() => new(this);

    /// <summary>Defines a shut-off domain.</summary>
    /// <param name="spec">What it looks like.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The domain.</returns>
    public async Task<SimDomain> DefineAsync(SimDomainSpec spec, CancellationToken cancellationToken = default)
    {
        if (spec.Disks.Count == 0 || spec.Disks.Select(d => d.Target).Distinct(StringComparer.Ordinal).Count() != spec.Disks.Count)
        {
            throw new ArgumentException($"Domain '{spec.Name}' needs at least one disk and unique targets.", nameof(spec));
        }

        await Lock.WaitAsync(cancellationToken);
        try
        {
            if (Fleet.Hosts.SelectMany(h => h.Domains).Any(d => d.Name == spec.Name))
            {
                throw new ArgumentException($"A domain named '{spec.Name}' exists in the fleet.", nameof(spec));
            }

            var domain = new SimDomain(this, (spec.Id ?? Fleet.NewDomainId()).ToString(), spec.Name);
            foreach (var disk in spec.Disks)
            {
                if (disk.Size == 0 || disk.Size % 512 != 0 || disk.Format is not (DiskFormats.Qcow2 or DiskFormats.Raw))
                {
                    throw new ArgumentException($"Disk '{disk.Target}' of '{spec.Name}': size must be a positive multiple of 512 and the format qcow2 or raw.", nameof(spec));
                }

                var identity = Fleet.NewIdentity();
                domain.AddDisk(new SimDisk(domain, disk.Target, disk.Format, Fleet.CreateStorage(identity, disk.Size), identity));
            }

            Attach(domain);
            Publish(domain, DomainEventKind.Defined, null);
            return domain;
        }
        finally
        {
            Lock.Release();
        }
    }

    /// <summary>Stops the NBD server and frees the domains' disks.</summary>
    /// <returns>A task.</returns>
    public async ValueTask DisposeAsync()
    {
        Events.Complete();
        await Server.DisposeAsync();
        foreach (var domain in Domains)
        {
            foreach (var disk in domain.Disks)
            {
                await disk.Storage.DisposeAsync();
            }
        }
    }

    internal NbdUri Uri(string exportName) => NbdUri.ForUnixSocket(SocketPath, exportName);

    internal SimDomain? Find(string domainId)
    {
        lock (_domains)
        {
            return _domains.FirstOrDefault(d => d.Id == domainId);
        }
    }

    internal void Attach(SimDomain domain)
    {
        lock (_domains)
        {
            _domains.Add(domain);
        }

        domain.Host = this;
    }

    internal void Detach(SimDomain domain)
    {
        lock (_domains)
        {
            _domains.Remove(domain);
        }
    }

    internal void Publish(SimDomain domain, DomainEventKind kind, string? detail, string? target = null, string? captureId = null) =>
        Events.Publish(new DomainEvent(domain.Id, kind, Fleet.Options.TimeProvider.GetUtcNow())
        {
            HostName = Name,
            Detail = detail,
            Target = target,
            CaptureId = captureId,
        });
}
