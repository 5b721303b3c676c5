# docs/bench.svg: the headline ratios of bench/results.json (bench/summary.py passes data, out
# and when). psd2edge over the peer, higher is better; the dashed line is parity.
set terminal svg size 960,480 dynamic font 'sans,12' background rgb 'white'
set output out
set datafile separator "\t"
set title sprintf('psd2edge ÷ peer, same machine, same run (%s); higher is better', when)
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border rgb '#333333'
set boxwidth 0.8
set yrange [0:*]
set ylabel 'ratio'
set xtics rotate by -35 scale 0 nomirror
set ytics nomirror
set grid ytics lc rgb '#dddddd'
set bmargin 9
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb '#c0392b'
# a section that was not run has 0 and the label "not run"
plot data using 2:xtic(1) notitle lc rgb '#2e6da4', \
     '' using 0:2:3 with labels offset 0,0.8 notitle
