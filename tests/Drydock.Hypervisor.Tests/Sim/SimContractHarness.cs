using Drydock.Hypervisor.Contract;
using Drydock.Hypervisor.Sim;
using Drydock.Nbd.Client;

namespace Drydock.Hypervisor.Tests.Sim;

/// <summary>One simulated host with one domain, its disks sparse files served by Drydock.Nbd's server.</summary>
internal sealed class SimContractHarness : ContractHarness
{
    private readonly SimFleet _fleet;
    private readonly SimDomain _domain;
    private SimDriver _driver;

    private SimContractHarness(SimFleet fleet, SimDomain domain, bool limitedFleece)
    {
        _fleet = fleet;
        _domain = domain;
        _driver = domain.Host.Connect();
        FleeceLimited = limitedFleece;
    }

    public override IHypervisorDriver Driver => _driver;

    public override string DomainId => _domain.Id;

    public override IReadOnlyList<string> Targets => [.. _domain.Disks.Select(d => d.Target)];

    public override bool FleeceLimited { get; }

    public SimDomain Domain => _domain;

    public SimFleet Fleet => _fleet;

    public static async Task<SimContractHarness> CreateAsync(ContractDomainSpec spec, CancellationToken cancellationToken)
    {
        var directory = Directory.CreateTempSubdirectory("drydock-simtest-").FullName;
        var fleet = new SimFleet(new SimFleetOptions { Directory = directory });
        try
        {
            var host = await fleet.AddHostAsync("host-1");
            if (spec.LimitedFleece)
            {
                host.FleeceLimit = 1024 * 1024;
            }

            var domainSpec = new SimDomainSpec { Name = "vm-1" };
            for (var i = 0; i < spec.Disks; i++)
            {
                domainSpec.Disks.Add(new SimDiskSpec("vd" + (char)('a' + i), spec.DiskSize, spec.RawLastDisk && i == spec.Disks - 1 ? DiskFormats.Raw : DiskFormats.Qcow2));
            }

            var domain = await host.DefineAsync(domainSpec, cancellationToken);
            await domain.StartAsync(paused: false, cancellationToken);
            return new SimContractHarness(fleet, domain, spec.LimitedFleece);
        }
        catch
        {
            await fleet.DisposeAsync();
            throw;
        }
    }

    public override async Task WriteAsync(string target, ulong offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        await using var guest = await NbdClient.ConnectAsync(_domain.GuestEndpoint(target), cancellationToken: cancellationToken);
        const int Chunk = 1024 * 1024;
        for (var at = 0; at < data.Length; at += Chunk)
        {
            await guest.WriteAsync(offset + (ulong)at, data.Slice(at, Math.Min(Chunk, data.Length - at)), cancellationToken: cancellationToken);
        }

        await guest.FlushAsync(cancellationToken);
    }

    public override async Task TrimAsync(string target, ulong offset, ulong length, CancellationToken cancellationToken = default)
    {
        await using var guest = await NbdClient.ConnectAsync(_domain.GuestEndpoint(target), cancellationToken: cancellationToken);
        await guest.TrimAsync(offset, length, cancellationToken: cancellationToken);
    }

    public override async Task<byte[]> ReadLiveAsync(string target, ulong offset, int length, CancellationToken cancellationToken = default)
    {
        await using var guest = await NbdClient.ConnectAsync(_domain.GuestEndpoint(target), cancellationToken: cancellationToken);
        var buffer = new byte[length];
        const int Chunk = 1024 * 1024;
        for (var at = 0; at < length; at += Chunk)
        {
            await guest.ReadAsync(offset + (ulong)at, buffer.AsMemory(at, Math.Min(Chunk, length - at)), cancellationToken);
        }

        return buffer;
    }

    public override Task<IReadOnlyList<string>> FindLeftoversAsync(CancellationToken cancellationToken = default)
    {
        var leftovers = new List<string>();
        var guestExports = _domain.State == DomainState.Running ? _domain.Disks.Select(d => $"{_domain.Name}-{d.Target}").ToHashSet() : [];
        foreach (var host in _fleet.Hosts)
        {
            foreach (var export in host.ExportNames)
            {
                if (!guestExports.Contains(export))
                {
                    leftovers.Add($"export {export} on {host.Name}");
                }
            }
        }

        foreach (var disk in _domain.Disks)
        {
            if (disk.HasSnapshot)
            {
                leftovers.Add($"snapshot on disk {disk.Target}");
            }
        }

        if (_domain.CaptureId is { } capture)
        {
            leftovers.Add($"capture {capture}");
        }

        if (_domain.RestoreId is { } restore)
        {
            leftovers.Add($"restore export {restore}");
        }

        return Task.FromResult<IReadOnlyList<string>>(leftovers);
    }

    public override async Task RestartCleanlyAsync(CancellationToken cancellationToken = default)
    {
        await _domain.DestroyAsync(cancellationToken);
        await _domain.StartAsync(paused: false, cancellationToken);
    }

    public override Task KillAsync(CancellationToken cancellationToken = default) => _domain.CrashAsync(cancellationToken);

    public override Task StartAgainAsync(CancellationToken cancellationToken = default) => _domain.StartAsync(paused: false, cancellationToken);

    public override Task RemoveBitmapAsync(string target, string bitmap, CancellationToken cancellationToken = default) =>
        _domain.RemoveBitmapAsync(target, bitmap, cancellationToken);

    public override Task LoseCheckpointMetadataAsync(string checkpoint, CancellationToken cancellationToken = default) =>
        _domain.LoseCheckpointMetadataAsync(checkpoint, cancellationToken);

    public override Task CreateForeignCheckpointAsync(string name, CancellationToken cancellationToken = default) =>
        _domain.CreateForeignCheckpointAsync(name, cancellationToken);

    public override Task ResizeDiskAsync(string target, ulong newSize, CancellationToken cancellationToken = default) =>
        _domain.ResizeDiskAsync(target, newSize, cancellationToken);

    public override Task HotAddDiskAsync(string target, ulong size, CancellationToken cancellationToken = default) =>
        _domain.AttachDiskAsync(target, size, DiskFormats.Qcow2, cancellationToken);

    public override Task RemoveDiskAsync(string target, CancellationToken cancellationToken = default) =>
        _domain.DetachDiskAsync(target, cancellationToken);

    public override Task ReplaceDiskAsync(string target, CancellationToken cancellationToken = default) =>
        _domain.ReplaceDiskAsync(target, cancellationToken);

    public override Task RevertDiskAsync(string target, CancellationToken cancellationToken = default) =>
        _domain.RevertDiskAsync(target, null, cancellationToken);

    public override async Task ReopenDriverAsync(CancellationToken cancellationToken = default)
    {
        await _driver.DisposeAsync();
        _driver = _domain.Host.Connect();
    }

    public override async ValueTask DisposeAsync()
    {
        var directory = _fleet.Options.Directory!;
        await _driver.DisposeAsync();
        await _fleet.DisposeAsync();
        Directory.Delete(directory, recursive: true);
    }
}

public sealed class SimContractTests : HypervisorContractTests
{
    protected override async Task<ContractHarness> CreateHarnessAsync(ContractDomainSpec spec, CancellationToken cancellationToken) =>
        await SimContractHarness.CreateAsync(spec, cancellationToken);
}
