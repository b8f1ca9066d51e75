using Drydock.Nbd.Server;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Drydock.Hypervisor.Sim;

/// <summary>Settings of a <see cref="SimFleet"/>.</summary>
public sealed class SimFleetOptions
{
    /// <summary>
    /// Where disks are kept as sparse files (one per disk image) and where hosts listen (Unix sockets). Null: disks in
    /// memory and sockets in a private temporary directory, removed on dispose.
    /// </summary>
    public string? Directory { get; set; }

    /// <summary>Keep disks in memory even when <see cref="Directory"/> is set. Default false.</summary>
    public bool InMemoryDisks { get; set; }

    /// <summary>Seed of identifiers (domain UUIDs, disk identities), so that a run can be repeated. Default 1.</summary>
    public int Seed { get; set; } = 1;

    /// <summary>The clock. Default <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Logging. Default: none.</summary>
    public ILoggerFactory LoggerFactory { get; set; } = NullLoggerFactory.Instance;
}

/// <summary>
/// The simulated fleet: hosts, each with its domains and one NBD server (a Unix socket) serving guest, capture and
/// restore exports. Drivers (<see cref="SimHost.Connect"/>) are views on a host; the state lives here, so a new
/// driver instance finds what an earlier one left (F03). The embedded default hypervisor and the fleet-scale
/// simulator.
/// </summary>
public sealed class SimFleet : IAsyncDisposable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, SimHost> _hosts = new(StringComparer.Ordinal);
    private readonly Random _ids;
    private readonly string _directory;
    private readonly bool _ownsDirectory;

    /// <summary>Creates an empty fleet.</summary>
    /// <param name="options">Settings, or null for defaults.</param>
    public SimFleet(SimFleetOptions? options = null)
    {
        Options = options ?? new SimFleetOptions();
#pragma warning disable CA5394 // Seeded on purpose: identifiers repeat from run to run; nothing here is secret.
        _ids = new Random(Options.Seed);
#pragma warning restore CA5394
        if (Options.Directory is { } directory)
        {
            System.IO.Directory.CreateDirectory(directory);
            _directory = directory;
        }
        else
        {
            _directory = System.IO.Directory.CreateTempSubdirectory("drydock-sim-").FullName;
            _ownsDirectory = true;
        }
    }

    /// <summary>The settings.</summary>
    public SimFleetOptions Options { get; }

    /// <summary>The hosts.</summary>
    public IReadOnlyList<SimHost> Hosts
    {
        get
        {
            lock (_lock)
            {
                return [.. _hosts.Values];
            }
        }
    }

    /// <summary>Adds a host, listening on <c>DIRECTORY/NAME.sock</c>.</summary>
    /// <param name="name">Host name (letters, digits, '-', '_', '.').</param>
    /// <returns>The host.</returns>
    public async Task<SimHost> AddHostAsync(string name)
    {
        if (name.Length is 0 or > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
        {
            throw new ArgumentException($"Host name '{name}' must be 1-64 ASCII letters, digits, '-', '_' or '.'.", nameof(name));
        }

#pragma warning disable CA2000 // Owned by the host (disposed with it), or disposed below on failure.
        var server = new NbdServer(new NbdServerOptions { TimeProvider = Options.TimeProvider, LoggerFactory = Options.LoggerFactory });
#pragma warning restore CA2000
        var socket = Path.Combine(_directory, name + ".sock");
        try
        {
            lock (_lock)
            {
                if (_hosts.ContainsKey(name))
                {
                    throw new ArgumentException($"Host '{name}' exists.", nameof(name));
                }

                server.ListenUnix(socket);
                var host = new SimHost(this, name, server, socket);
                _hosts.Add(name, host);
                return host;
            }
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>The host named <paramref name="name"/>.</summary>
    /// <param name="name">The host name.</param>
    /// <returns>The host.</returns>
    public SimHost Host(string name)
    {
        lock (_lock)
        {
            return _hosts.TryGetValue(name, out var host) ? host : throw new ArgumentException($"No simulated host '{name}'.", nameof(name));
        }
    }

    /// <summary>
    /// Builds a fleet of <paramref name="hosts"/> hosts with <paramref name="domainsPerHost"/> running domains each,
    /// every domain with <paramref name="disksPerDomain"/> empty qcow2 disks of <paramref name="diskSize"/> bytes.
    /// </summary>
    /// <param name="hosts">Number of hosts (named <c>sim-host-1</c>…).</param>
    /// <param name="domainsPerHost">Domains per host (named <c>HOST-vm-1</c>…).</param>
    /// <param name="disksPerDomain">Disks per domain (<c>vda</c>, <c>vdb</c>…).</param>
    /// <param name="diskSize">Size of every disk.</param>
    /// <param name="cancellationToken">Cancels the set-up.</param>
    /// <returns>A task.</returns>
    public async Task PopulateAsync(int hosts, int domainsPerHost, int disksPerDomain, ulong diskSize, CancellationToken cancellationToken = default)
    {
        for (var h = 1; h <= hosts; h++)
        {
            var host = await AddHostAsync(FormattableString.Invariant($"sim-host-{h}"));
            for (var d = 1; d <= domainsPerHost; d++)
            {
                var spec = new SimDomainSpec { Name = FormattableString.Invariant($"{host.Name}-vm-{d}") };
                for (var k = 0; k < disksPerDomain; k++)
                {
                    spec.Disks.Add(new SimDiskSpec("vd" + (char)('a' + k), diskSize));
                }

                var domain = await host.DefineAsync(spec, cancellationToken);
                await domain.StartAsync(paused: false, cancellationToken);
            }
        }
    }

    /// <summary>Stops every host's server and frees the disks.</summary>
    /// <returns>A task.</returns>
    public async ValueTask DisposeAsync()
    {
        foreach (var host in Hosts)
        {
            await host.DisposeAsync();
        }

        if (_ownsDirectory)
        {
            try
            {
                System.IO.Directory.Delete(_directory, recursive: true);
            }
            catch (IOException)
            {
                // Best effort for a temporary directory.
            }
        }
    }

    internal string NewIdentity()
    {
        lock (_ids)
        {
            return "sim-image-" + NextGuid().ToString("N");
        }
    }

    internal Guid NewDomainId()
    {
        lock (_ids)
        {
            return NextGuid();
        }
    }

    internal NbdExportBackend CreateStorage(string identity, ulong size) =>
        Options.InMemoryDisks || Options.Directory is null
            ? new NbdMemoryBackend(size, 64 * 1024)
            : NbdFileBackend.Create(Path.Combine(_directory, identity + ".img"), size);

    internal async Task<NbdExportBackend> ResizeStorageAsync(NbdExportBackend old, ulong size, CancellationToken cancellationToken)
    {
        if (old is NbdFileBackend file)
        {
            var path = file.Path;
            await file.DisposeAsync();
            using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite))
            {
                RandomAccess.SetLength(handle, (long)size);
            }

            return NbdFileBackend.Open(path);
        }

        var grown = new NbdMemoryBackend(size, 64 * 1024);
        var buffer = new byte[1024 * 1024];
        for (ulong at = 0; at < old.Size;)
        {
            var extent = (await old.GetAllocationAsync(at, Math.Min((ulong)buffer.Length, old.Size - at), 1, cancellationToken))[0];
            var length = (int)Math.Min(extent.Length, (ulong)buffer.Length);
            if (!extent.IsHole)
            {
                await old.ReadAsync(at, buffer.AsMemory(0, length), cancellationToken);
                await grown.WriteAsync(at, buffer.AsMemory(0, length), fua: false, cancellationToken);
            }

            at += (ulong)length;
        }

        return grown;
    }

    private Guid NextGuid()
    {
        Span<byte> bytes = stackalloc byte[16];
#pragma warning disable CA5394 // See the constructor.
        _ids.NextBytes(bytes);
#pragma warning restore CA5394
        bytes[7] = (byte)((bytes[7] & 0x0f) | 0x40); // version 4
        bytes[8] = (byte)((bytes[8] & 0x3f) | 0x80); // RFC 4122 variant
        return new Guid(bytes);
    }
}
