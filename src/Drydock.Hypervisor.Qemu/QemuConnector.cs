using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Drydock.Hypervisor.Qemu.Qmp;

namespace Drydock.Hypervisor.Qemu;

/// <summary>
/// Opens a <see cref="QemuDriver"/> for one running instance from a <c>qemu:</c> URI address:
/// <c>unix:/run/vm1/qmp.sock</c> (or just the path), optionally followed by <c>?id=NAME&amp;fleece=DIR&amp;nbd=SOCKET&amp;pidfile=FILE</c>.
/// Its disks are discovered from the block graph: every <c>raw</c> node whose <c>file</c> child is a qcow2 or raw
/// node, and which something uses or whose name starts with <c>front-</c>, is a front node; the disk's target is the front
/// node's name without a <c>front-</c> prefix (a front node still on the snapshot filter of a capture a dead process left
/// is seen through it). Defaults: id from the socket path, fleece directory <c>SOCKETDIR/drydock-fleece</c>, NBD socket
/// <c>SOCKETDIR/drydock-nbd.sock</c>.
/// </summary>
/// <param name="template">Settings copied into every driver (timeouts, clock, logging); its domains are ignored.</param>
public sealed class QemuConnector(QemuDriverOptions? template = null) : IHypervisorConnector
{
    /// <inheritdoc/>
    public string Scheme => "qemu";

    /// <inheritdoc/>
    public async Task<IHypervisorDriver> ConnectAsync(string address, CancellationToken cancellationToken = default)
    {
        var domain = await DiscoverAsync(address, cancellationToken);
        var options = new QemuDriverOptions
        {
            HostName = template?.HostName ?? Environment.MachineName,
            CommandTimeout = template?.CommandTimeout ?? TimeSpan.FromSeconds(60),
            ConnectTimeout = template?.ConnectTimeout ?? TimeSpan.FromSeconds(5),
            CbwTimeout = template?.CbwTimeout ?? TimeSpan.FromSeconds(30),
            DestroyGracePeriod = template?.DestroyGracePeriod ?? TimeSpan.FromSeconds(10),
            TimeProvider = template?.TimeProvider ?? TimeProvider.System,
        };
        if (template is not null)
        {
            options.LoggerFactory = template.LoggerFactory;
        }

        options.Domains.Add(domain);
        return new QemuDriver(options);
    }

    /// <summary>Reads the address and discovers the instance's disks.</summary>
    /// <param name="address">The address (see the type's summary).</param>
    /// <param name="cancellationToken">Cancels the discovery.</param>
    /// <returns>The domain's options.</returns>
    public static async Task<QemuDomainOptions> DiscoverAsync(string address, CancellationToken cancellationToken = default)
    {
        var (socket, query) = Split(address);
        var directory = Path.GetDirectoryName(socket) ?? "/";
        var domain = new QemuDomainOptions
        {
            Id = query.GetValueOrDefault("id") ?? "qemu-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(socket)))[..12],
            QmpSocketPath = socket,
            FleeceDirectory = query.GetValueOrDefault("fleece") ?? Path.Combine(directory, "drydock-fleece"),
            NbdSocketPath = query.GetValueOrDefault("nbd") ?? Path.Combine(directory, "drydock-nbd.sock"),
            PidFile = query.GetValueOrDefault("pidfile"),
        };

        QmpClient qmp;
        try
        {
            qmp = await QmpClient.ConnectAsync(socket, cancellationToken: cancellationToken);
        }
        catch (QmpConnectionException ex)
        {
            throw new HypervisorConnectionException($"Cannot reach the QMP monitor at '{socket}': {ex.Message}", innerException: ex);
        }

        await using (qmp)
        {
            var nodes = await qmp.QueryNamedBlockNodesAsync(cancellationToken);
            var graph = await qmp.QueryBlockGraphAsync(cancellationToken);
            foreach (var front in nodes.Where(n => n.Driver == "raw").OrderBy(n => n.NodeName, StringComparer.Ordinal))
            {
                var child = graph.ChildOf(front.NodeName, "file");
                if (child is not null && CaptureNames.TryParse(child, out _, out _))
                {
                    // A capture a dead process left (F03) keeps the front node on its snapshot filter: the disk is the
                    // filter's own file child, and the driver's leftover release puts the front node back on it.
                    child = graph.ChildOf(child, "file");
                }

                var format = nodes.FirstOrDefault(n => n.NodeName == child);

                // An unused front node named front-* is still a disk: its consumer may have been stopped for a restore.
                var used = graph.ParentsOf(front.NodeName).Count > 0 || front.NodeName.StartsWith("front-", StringComparison.Ordinal);
                if (format is null || format.Driver is not (DiskFormats.Qcow2 or DiskFormats.Raw) || !used
                    || CaptureNames.TryParse(front.NodeName, out _, out _))
                {
                    continue;
                }

                var target = front.NodeName.StartsWith("front-", StringComparison.Ordinal) ? front.NodeName["front-".Length..] : front.NodeName;
                domain.Disks.Add(new QemuDiskOptions { Target = target, NodeName = format.NodeName, FrontNodeName = front.NodeName, Format = format.Driver });
            }
        }

        if (domain.Disks.Count == 0)
        {
            throw new HypervisorConnectionException($"The instance at '{socket}' has no disk in Drydock's layout (a used raw front node over a qcow2 or raw node).");
        }

        return domain;
    }

    private static (string Socket, Dictionary<string, string> Query) Split(string address)
    {
        var text = address.StartsWith("unix:", StringComparison.Ordinal) ? address["unix:".Length..] : address;
        var query = new Dictionary<string, string>(StringComparer.Ordinal);
        var mark = text.IndexOf('?', StringComparison.Ordinal);
        if (mark >= 0)
        {
            foreach (var pair in text[(mark + 1)..].Split('&', StringSplitOptions.RemoveEmptyEntries))
            {
                var equals = pair.IndexOf('=', StringComparison.Ordinal);
                if (equals <= 0)
                {
                    throw new ArgumentException($"Bad parameter '{pair}' in qemu address '{address}'.", nameof(address));
                }

                query[Uri.UnescapeDataString(pair[..equals])] = Uri.UnescapeDataString(pair[(equals + 1)..]);
            }

            text = text[..mark];
        }

        if (!Path.IsPathRooted(text))
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"The qemu address '{address}' must name the monitor socket by an absolute path."), nameof(address));
        }

        return (text, query);
    }
}
