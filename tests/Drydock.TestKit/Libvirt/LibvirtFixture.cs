using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;

namespace Drydock.TestKit.Libvirt;

/// <summary>One disk of a test domain.</summary>
/// <param name="Target">The target name (<c>vda</c>, <c>vdb</c>, …).</param>
/// <param name="Size">Virtual size in bytes.</param>
/// <param name="Format"><c>qcow2</c> or <c>raw</c>.</param>
public sealed record TestDiskSpec(string Target, long Size, string Format = ImageFormat.Qcow2);

/// <summary>
/// The libvirtd shared by every libvirt test of a run (<c>ICollectionFixture&lt;LibvirtFixture&gt;</c>; keep those tests
/// in one collection: there is one libvirtd per machine), with directories QEMU can use: a base directory (0755) for
/// disk images, a socket directory owned by <c>libvirt-qemu</c> (QEMU creates the NBD sockets there) and a scratch
/// directory. Test domains are TCG (<c>type='qemu'</c>), 128 MiB, no guest OS, started paused; every domain the
/// fixture created is destroyed and undefined (with its checkpoint metadata) on dispose. Before libvirtd starts, the
/// certificates of TLS pull-mode backups are installed and qemu.conf names them (<see cref="LibvirtBackupTls"/>); a
/// libvirtd that was already running is restarted only when that setting had to be added or changed.
/// </summary>
public sealed class LibvirtFixture : Xunit.IAsyncLifetime
{
    private readonly ConcurrentDictionary<string, LibvirtTestDomain> _domains = new(StringComparer.Ordinal);
    private LibvirtBackupTls? _backupTls;
    private LibvirtDaemon? _daemon;
    private TestDirectory? _directory;

    /// <summary>The daemon.</summary>
    public LibvirtDaemon Daemon => _daemon ?? throw new InvalidOperationException("The fixture is not initialised.");

    /// <summary>The certificates libvirt serves TLS backups with, and this run's client certificates for them.</summary>
    public LibvirtBackupTls BackupTls => _backupTls ?? throw new InvalidOperationException("The fixture is not initialised.");

    /// <summary>The base directory (mode 0755).</summary>
    public string DirectoryPath => _directory?.Path ?? throw new InvalidOperationException("The fixture is not initialised.");

    /// <summary>Where QEMU creates NBD sockets (owned by libvirt-qemu, mode 0750).</summary>
    public string SocketDirectory => Path.Combine(DirectoryPath, "nbd");

    /// <summary>Where libvirt creates scratch files.</summary>
    public string ScratchDirectory => Path.Combine(DirectoryPath, "scratch");

    /// <inheritdoc/>
    public async ValueTask InitializeAsync()
    {
        _backupTls = await LibvirtBackupTls.InstallAsync();
        _daemon = await LibvirtDaemon.StartAsync(restartRunning: _backupTls.ConfigurationChanged);
        _directory = TestDirectory.Create("libvirt");
        File.SetUnixFileMode(_directory.Path, (UnixFileMode)0b111_101_101);
        Directory.CreateDirectory(ScratchDirectory);
        File.SetUnixFileMode(ScratchDirectory, (UnixFileMode)0b111_101_101);
        await ProcessRunner.RunAsync("install", ["-d", "-o", "libvirt-qemu", "-g", "libvirt-qemu", "-m", "0750", SocketDirectory]);
    }

    /// <summary>
    /// Creates qcow2/raw images in a private directory, defines a domain named <c>drydock-test-XXXXXXXX</c> with them on
    /// virtio, and starts it paused (unless <paramref name="start"/> is false).
    /// </summary>
    public async Task<LibvirtTestDomain> CreateDomainAsync(IReadOnlyList<TestDiskSpec>? disks = null, bool start = true, CancellationToken cancellationToken = default)
    {
        disks ??= [new TestDiskSpec("vda", 64 << 20), new TestDiskSpec("vdb", 32 << 20)];
        var name = "drydock-test-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        var directory = Path.Combine(DirectoryPath, name);
        Directory.CreateDirectory(directory);
        File.SetUnixFileMode(directory, (UnixFileMode)0b111_101_101);
        var images = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var disk in disks)
        {
            images[disk.Target] = await QemuImage.CreateAsync(Path.Combine(directory, $"{disk.Target}.{disk.Format}"), disk.Format, disk.Size, cancellationToken);
        }

        var xmlPath = Path.Combine(directory, "domain.xml");
        await File.WriteAllTextAsync(xmlPath, DomainXml(name, disks, images), cancellationToken);
        await LibvirtDaemon.VirshAsync(["define", xmlPath], cancellationToken);
        var domain = new LibvirtTestDomain(this, name, directory, disks, images);
        _domains[name] = domain;
        domain.Uuid = (await LibvirtDaemon.VirshAsync(["domuuid", name], cancellationToken)).StandardOutput.Trim();
        if (start)
        {
            await LibvirtDaemon.VirshAsync(["start", "--paused", name], cancellationToken);
        }

        return domain;
    }

    /// <summary>The libvirt domain XML of a test domain.</summary>
    public static string DomainXml(string name, IReadOnlyList<TestDiskSpec> disks, IReadOnlyDictionary<string, string> images)
    {
        var diskXml = string.Concat(disks.Select(d => string.Create(CultureInfo.InvariantCulture,
            $"""
                <disk type='file' device='disk'>
                  <driver name='qemu' type='{d.Format}' discard='unmap'/>
                  <source file='{images[d.Target]}'/>
                  <target dev='{d.Target}' bus='virtio'/>
                </disk>

            """)));
        return $"""
            <domain type='qemu'>
              <name>{name}</name>
              <memory unit='MiB'>128</memory>
              <vcpu>1</vcpu>
              <os><type arch='x86_64' machine='pc'>hvm</type></os>
              <features><acpi/></features>
              <devices>
                <emulator>/usr/bin/qemu-system-x86_64</emulator>
            {diskXml}    <memballoon model='none'/>
              </devices>
            </domain>
            """;
    }

    internal void Forget(string name) => _domains.TryRemove(name, out _);

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        foreach (var domain in _domains.Values)
        {
            await domain.DisposeAsync();
        }

        if (_daemon is not null)
        {
            await _daemon.DisposeAsync();
        }

        _directory?.Dispose();
        _backupTls?.Dispose();
    }
}

/// <summary>A domain a <see cref="LibvirtFixture"/> created; dispose destroys and undefines it.</summary>
public sealed class LibvirtTestDomain : IAsyncDisposable
{
    private readonly LibvirtFixture _fixture;
    private readonly List<TestDiskSpec> _disks;
    private readonly Dictionary<string, string> _images;
    private int _disposed;

    internal LibvirtTestDomain(LibvirtFixture fixture, string name, string directory, IReadOnlyList<TestDiskSpec> disks, IReadOnlyDictionary<string, string> images)
    {
        _fixture = fixture;
        Name = name;
        DirectoryPath = directory;
        _disks = [.. disks];
        _images = new Dictionary<string, string>(images, StringComparer.Ordinal);
    }

    /// <summary>The domain's name.</summary>
    public string Name { get; }

    /// <summary>The domain's UUID.</summary>
    public string Uuid { get; internal set; } = string.Empty;

    /// <summary>The directory of its images.</summary>
    public string DirectoryPath { get; }

    /// <summary>Per target, the image file.</summary>
    public IReadOnlyDictionary<string, string> Images => _images;

    /// <summary>Its disks: those it was created with, plus attached, minus detached ones.</summary>
    public IReadOnlyList<TestDiskSpec> Disks => _disks;

    /// <summary>
    /// Hot-plugs a new image as a virtio disk into the running domain (PCI hot-add through ACPI, which the test domains
    /// enable; it needs no guest cooperation), and keeps it in the persistent definition so a restart keeps it.
    /// </summary>
    public async Task AttachDiskAsync(TestDiskSpec disk, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(disk);
        var image = await QemuImage.CreateAsync(Path.Combine(DirectoryPath, $"{disk.Target}.{disk.Format}"), disk.Format, disk.Size, cancellationToken);
        await LibvirtDaemon.VirshAsync(
            ["attach-disk", Name, image, disk.Target, "--driver", "qemu", "--subdriver", disk.Format, "--targetbus", "virtio", "--persistent"],
            cancellationToken);
        _disks.Add(disk);
        _images[disk.Target] = image;
    }

    /// <summary>
    /// Removes a disk from the domain. A live unplug waits for the guest to release the device, which a domain without an
    /// operating system never does; so the disk leaves the persistent definition and the domain is restarted (QEMU stops
    /// on SIGTERM, storing the persistent bitmaps of the other disks) and runs without it.
    /// </summary>
    public async Task DetachDiskAsync(string target, CancellationToken cancellationToken = default)
    {
        var disk = _disks.Single(d => d.Target == target);
        await LibvirtDaemon.VirshAsync(["detach-disk", Name, target, "--config"], cancellationToken);
        await LibvirtDaemon.VirshAsync(["destroy", Name], cancellationToken);
        await LibvirtDaemon.VirshAsync(["start", Name], cancellationToken);
        _disks.Remove(disk);
        File.Delete(_images[target]);
        _images.Remove(target);
    }

    /// <summary>
    /// Writes <paramref name="length"/> bytes of <paramref name="pattern"/> at <paramref name="offset"/> of a disk as the
    /// guest would: HMP <c>qemu-io</c> through the virtio device path (never a node name: that would bypass the backup
    /// filter, REAL-STACK.md).
    /// </summary>
    public async Task WriteAsync(string target, long offset, long length, byte pattern, CancellationToken cancellationToken = default)
    {
        await QemuIoAsync(target, string.Create(CultureInfo.InvariantCulture, $"write -P 0x{pattern:x2} {offset} {length}"), cancellationToken);
    }

    /// <summary>
    /// Runs a <c>qemu-io</c> command on a disk's virtio device through HMP. qemu-io prints to QEMU's stdout, which libvirt
    /// writes to the domain log (not to the monitor reply), so a failure is read from the log lines the command added.
    /// </summary>
    /// <exception cref="InvalidOperationException">qemu-io reported a failure; the message has its words.</exception>
    public async Task QemuIoAsync(string target, string command, CancellationToken cancellationToken = default)
    {
        var index = DeviceIndex(target);
        var log = $"/var/log/libvirt/qemu/{Name}.log";
        var before = File.Exists(log) ? new FileInfo(log).Length : 0;
        await LibvirtDaemon.VirshAsync(["qemu-monitor-command", Name, "--hmp",
            string.Create(CultureInfo.InvariantCulture, $"qemu-io -d /machine/peripheral/virtio-disk{index}/virtio-backend \"{command}\"")], cancellationToken);
        if (File.Exists(log))
        {
            await using var stream = new FileStream(log, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            stream.Position = Math.Min(before, stream.Length);
            var added = await new StreamReader(stream).ReadToEndAsync(cancellationToken);
            var failure = added.Split('\n').FirstOrDefault(l => l.Contains("failed", StringComparison.OrdinalIgnoreCase) || l.Contains("error", StringComparison.OrdinalIgnoreCase));
            if (failure is not null)
            {
                throw new InvalidOperationException($"qemu-io '{command}' on {Name}/{target} failed: {failure.Trim()}");
            }
        }
    }

    // libvirt names a virtio disk's device virtio-disk<N>, N from its target name as virDiskNameToIndex counts it
    // (vda 0, vdb 1, …, vdz 25, vdaa 26): attached and detached disks keep their numbers.
    private static int DeviceIndex(string target)
    {
        var index = 0;
        foreach (var letter in target.AsSpan(2))
        {
            index = (index * 26) + (letter - 'a' + 1);
        }

        return index - 1;
    }

    /// <summary>Runs a QMP command through <c>virsh qemu-monitor-command</c> and returns the reply.</summary>
    public async Task<string> QmpAsync(string json, CancellationToken cancellationToken = default) =>
        (await LibvirtDaemon.VirshAsync(["qemu-monitor-command", Name, json], cancellationToken)).StandardOutput;

    /// <summary>The QEMU process id (from libvirt's pid file).</summary>
    public int QemuPid() =>
        int.Parse(File.ReadAllText($"/run/libvirt/qemu/{Name}.pid").Trim(), NumberStyles.None, CultureInfo.InvariantCulture);

    /// <summary>
    /// Kills QEMU with SIGKILL and waits until the process is gone, without asking libvirt (which may be down: F20).
    /// </summary>
    public async Task KillQemuProcessAsync(CancellationToken cancellationToken = default)
    {
        var pid = QemuPid();
        _ = Interop.NativeMethods.Kill(pid, Interop.NativeMethods.SigKill);
        for (var i = 0; i < 400; i++)
        {
            // Gone, or a zombie waiting for libvirtd (its parent) to reap it.
            if (!ProcessState.IsAlive(pid))
            {
                return;
            }

            await Task.Delay(50, cancellationToken);
        }

        throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"QEMU (pid {pid}) of {Name} still runs 20 s after SIGKILL."));
    }

    /// <summary>Kills QEMU with SIGKILL (an unclean stop: persistent bitmaps come back inconsistent) and waits until libvirt sees it.</summary>
    public async Task KillQemuAsync(CancellationToken cancellationToken = default)
    {
        await KillQemuProcessAsync(cancellationToken);
        for (var i = 0; i < 200; i++)
        {
            if ((await LibvirtDaemon.VirshAsync(["domstate", Name], cancellationToken)).StandardOutput.Contains("shut off", StringComparison.Ordinal))
            {
                return;
            }

            await Task.Delay(100, cancellationToken);
        }

        throw new InvalidOperationException($"libvirt still reports {Name} running 20 s after SIGKILL of QEMU.");
    }

    /// <summary>Destroys (if running) and undefines the domain with its checkpoint metadata; deletes its images.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        _fixture.Forget(Name);
        await LibvirtDaemon.VirshAsync(["destroy", Name], throwOnFailure: false, TimeSpan.FromSeconds(60));
        await LibvirtDaemon.VirshAsync(["undefine", "--checkpoints-metadata", Name], throwOnFailure: false, TimeSpan.FromSeconds(60));
        try
        {
            Directory.Delete(DirectoryPath, recursive: true);
        }
        catch (IOException)
        {
            // Left for the fixture's directory clean-up.
        }
    }
}
