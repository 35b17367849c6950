function plotcurves(files, labels, out_png, max_radius, mode)
% PLOTCURVES  Certified accuracy against L2 radius from MACER .mat files, saved as a PNG.
%
%   plotcurves({'macer.mat', 'cohen.mat'}, {'MACER', 'Cohen'}, 'curves.png')
%   plotcurves(files, labels, out_png, max_radius, mode)
%
% Runs in MATLAB and in GNU Octave, e.g.
%   octave --no-gui --eval "plotcurves({'440.mat'}, {'MACER-0.25'}, 'out.png', 1.0)"
%
% files:      cell array of .mat files written by main.py (or the public MACER code): key 'hard'
%             (and 'soft'), one value per image, the radius when certified correct and -1 otherwise.
% labels:     cell array of legend entries, one per file.
% out_png:    the PNG to write.
% max_radius: right end of the curves (default: the largest radius, rounded up to 0.25).
% mode:       'hard' (default) or 'soft'.
%
% Certified accuracy at r counts the radii >= r, as visualize/plotcurves.py and docs/METHOD.md
% ("Protocol and metrics"); the MACER authors' script counted radii > r.

if nargin < 5, mode = 'hard'; end
n_files = numel(files);
radii = cell(1, n_files);
top = 0;
for i = 1:n_files
  s = load(files{i});
  if ~isfield(s, mode)
    error('plotcurves: %s has no ''%s'' results', files{i}, mode);
  end
  radii{i} = double(s.(mode)(:));
  top = max(top, max(radii{i}));
end
if nargin < 4 || isempty(max_radius)
  max_radius = max(0.25, ceil(top / 0.25) * 0.25);
end

styles = {'r-', 'b--', 'm:', 'g-.', 'k-', 'c--'};
x = linspace(0, max_radius, 1001);
fig = figure('visible', 'off');
hold on
for i = 1:n_files
  r = radii{i};
  y = zeros(size(x));
  for j = 1:numel(x)
    y(j) = sum(r >= x(j)) / numel(r);   % wrong or abstained images are -1: never counted
  end
  plot(x, y, styles{mod(i - 1, numel(styles)) + 1}, 'linewidth', 3);
end
ylim([0 1]);
xlim([0 max_radius]);
legend(labels);
xlabel('l_2 radius');
ylabel('Certified accuracy');
set(gca, 'fontsize', 14);
print(fig, out_png, '-dpng', '-r100');
close(fig);
end
